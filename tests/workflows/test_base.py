"""Graph-building tests over option combinations (nothing is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_harmonize.app.participant import build_workflow
from bids_harmonize.app.plan import Settings
from bids_harmonize.bids import PetSeries, SubjectPlan
from bids_harmonize.templates import get_template

META = {"FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600], "Units": "Bq/mL",
        "ManufacturersModelName": "Biograph mMR"}


def _plan(root: Path) -> SubjectPlan:
    t1w = root / "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"
    mr = PetSeries(root / "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz", "01",
                   "petmr", "PiB", META, "PET-MR", "test")
    ct = PetSeries(root / "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_pet.nii.gz", "01",
                   "petct", "PiB", META, "PET-CT", "test",
                   ct=root / "sub-01/ses-petct/anat/sub-01_ses-petct_CT.nii.gz")
    return SubjectPlan("01", t1w, [mr, ct])


@pytest.mark.parametrize("with_model", [True, False])
@pytest.mark.parametrize("centiloid", [None, "vois"])
def test_graph_builds(tmp_path, templateflow_home, with_model, centiloid):
    template = get_template("MNI152NLin2009aSym")
    model = tmp_path / "model" if with_model else None
    if model:
        model.mkdir()
    wf = build_workflow([_plan(Path("/data"))],
        Settings(bids_dir=Path("/data"), output_dir=tmp_path / "out",
        template=template, model_dir=model, sloppy=True,
        centiloid_vois=tmp_path if centiloid else None,
        uptake_windows={"PiB": [40, 60]}))
    names = {n.fullname for n in wf._get_all_nodes()}
    assert any("harmonize_ses_petmr_trc_PiB_wf.harmonize" in n for n in names) is with_model
    assert not any("harmonize_ses_petct" in n for n in names)  # PET-CT is the reference
    assert any("ct2t1w" in n for n in names)
    assert any("centiloid" in n for n in names) is bool(centiloid)
    static = [n for n in wf._get_all_nodes() if n.name == "static"]
    assert {tuple(n.inputs.window_min) for n in static} == {(40.0, 60.0)}
    assert "N4" in wf.visit_desc() or "non-uniformity" in wf.visit_desc()


def test_runs_and_reconstructions_of_one_session_build(tmp_path, templateflow_home):
    """run-1, run-2 and a rec- of one PET-MR session: three branches, no duplicate names."""
    root = Path("/data")
    t1w = root / "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"
    names = ["sub-01_ses-petmr_trc-PiB_run-1_pet.nii.gz", "sub-01_ses-petmr_trc-PiB_run-2_pet.nii.gz",
             "sub-01_ses-petmr_trc-PiB_rec-OSEM_run-1_pet.nii.gz"]
    series = [PetSeries(root / "sub-01/ses-petmr/pet" / n, "01", "petmr", "PiB", META, "PET-MR",
                        "test") for n in names]
    model = tmp_path / "model"
    model.mkdir()
    wf = build_workflow([SubjectPlan("01", t1w, series)],
        Settings(bids_dir=root, output_dir=tmp_path / "out",
        template=get_template("MNI152NLin2009aSym"), model_dir=model, sloppy=True))
    nodes = wf._get_all_nodes()
    harmonize = sorted(n.fullname for n in nodes if n.name == "harmonize")
    assert [h.split(".")[-2] for h in harmonize] == [
        "harmonize_ses_petmr_trc_PiB_rec_OSEM_run_1_wf", "harmonize_ses_petmr_trc_PiB_run_1_wf",
        "harmonize_ses_petmr_trc_PiB_run_2_wf"]
    # every PET sink names its own series, so the three write different files
    sources = {n.inputs.source_file[0] for n in nodes
               if n.name.startswith("ds_pet_") and "harmonized" in n.fullname}
    assert sources == {str(s.path) for s in series}
    # the template-space image carries run and rec (its name feeds the tables)
    tpl = {n.inputs.out_name for n in nodes if n.name == "pet_to_template"}
    assert "sub-01_ses-petmr_trc-PiB_rec-OSEM_run-1_space-MNI152NLin2009aSym_desc-preproc_pet" \
        ".nii.gz" in tpl


WORKFLOW_MODULES = ("base", "outputs", "quantify", "pet", "anat", "harmonize")


def _workflow_blocks():
    import importlib
    import inspect
    import textwrap

    for module_name in WORKFLOW_MODULES:
        module = importlib.import_module(f"bids_harmonize.workflows.{module_name}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ != module.__name__ or ".. workflow::" not in (func.__doc__ or ""):
                continue
            doc = inspect.getdoc(func)
            block = doc.split(".. workflow::", 1)[1]
            lines = []
            for line in block.splitlines()[1:]:
                if line and not line.startswith(" "):
                    break
                lines.append(line)
            yield pytest.param(textwrap.dedent("\n".join(lines)), id=f"{module_name}.{name}")


@pytest.mark.parametrize("code", list(_workflow_blocks()))
def test_workflow_docstring_blocks_build(code, templateflow_home):
    """Each ``.. workflow::`` block builds its graph (the docs render them)."""
    namespace: dict = {}
    exec(compile(code, "<workflow block>", "exec"), namespace)  # noqa: S102
    assert namespace["wf"]._get_all_nodes() is not None


def test_series_that_only_an_unknown_entity_separates_are_refused(tmp_path, templateflow_home):
    from bids_harmonize.bids import InputError

    root = Path("/data")
    series = [PetSeries(root / f"sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-{t}_pet.nii.gz", "01",
                        "petmr", "PiB", META, "PET-MR", "test") for t in ("PiB", "pib")]
    with pytest.raises(InputError, match="sub-01_ses-petmr_trc-pib_pet.nii.gz: same session"):
        build_workflow([SubjectPlan("01", root / "sub-01/anat/sub-01_T1w.nii.gz", series)],
            Settings(bids_dir=root,
            output_dir=tmp_path, template=get_template("MNI152NLin2009aSym"), sloppy=True))


def _double(x):
    return 2 * x


def test_finished_graph_with_identity_nodes_has_no_unfinished_nodes(tmp_path):
    """inputnode/outputnode never run (Nipype removes them): they are not 'unfinished'."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from bids_harmonize.execution import unfinished_nodes

    inner = Workflow(name="inner_wf")
    inputnode = pe.Node(niu.IdentityInterface(fields=["x"]), name="inputnode")
    double = pe.Node(niu.Function(function=_double, input_names=["x"], output_names=["y"]),
                     name="double")
    inner.connect(inputnode, "x", double, "x")
    outer = Workflow(name="outer_wf", base_dir=str(tmp_path))
    source = pe.Node(niu.Function(function=_double, input_names=["x"], output_names=["y"]),
                     name="source")
    source.inputs.x = 1
    outer.connect(source, "y", inner, "inputnode.x")
    assert len(unfinished_nodes(outer)) == 2  # before the run: both function nodes
    outer.run(plugin="Linear")
    assert unfinished_nodes(outer) == []


@pytest.mark.parametrize("sloppy", [True, False])
def test_methods_text_names_model_reference_region_atlas_and_sloppy(tmp_path, templateflow_home,
                                                                    sloppy):
    """The methods text says which model (name, version, simulated training data), which
    reference region and atlas, and whether --sloppy was used; the graph is unchanged."""
    from bids_harmonize.harmonizer.weights import default_model_dir, load_model
    from bids_harmonize.reports.boilerplate import collect_descriptions

    kwargs = {"bids_dir": Path("/data"), "output_dir": tmp_path / "out",
              "template": get_template("MNI152NLin2009aSym"), "sloppy": sloppy}
    wf = build_workflow([_plan(Path("/data"))],
        Settings(model_dir=default_model_dir(), **kwargs))
    text = "\n\n".join(collect_descriptions(wf))
    version = load_model(default_model_dir()).version
    assert f"the model *demo* (version {version}; trained on simulated data only" in text
    assert "PiB uptake was summarised" in text and "reference region whole cerebellum" in text
    assert "*synth* atlas" in text
    assert ("`--sloppy`" in text) is sloppy
    # an empty model folder (no card) still builds, without a model clause
    empty = tmp_path / "model"
    empty.mkdir()
    text = "\n\n".join(collect_descriptions(
        build_workflow([_plan(Path("/data"))], Settings(model_dir=empty, **kwargs))))
    assert "harmonized towards PET-CT" in text and "the model *" not in text


def test_series_without_trc_entity_get_it_in_output_names_only(tmp_path, templateflow_home):
    """bids-examples pet005 names its PET without trc-: the outputs carry trc-<tracer_label>
    (the group level needs it), the data input stays the file; a trc- name is unchanged."""
    root = Path("/data")
    t1w = root / "sub-01/anat/sub-01_T1w.nii.gz"
    bare = PetSeries(root / "sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.nii.gz", "01",
                     "baseline", "PiB", META, "PET-MR", "test", tracer_label="PIB")
    named = PetSeries(root / "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_pet.nii.gz", "01",
                      "petct", "PiB", META, "PET-CT", "test", tracer_label="PiB")
    model = tmp_path / "model"
    model.mkdir()
    wf = build_workflow([SubjectPlan("01", t1w, [bare, named])],
        Settings(bids_dir=root, output_dir=tmp_path / "out",
        template=get_template("MNI152NLin2009aSym"), model_dir=model, sloppy=True,
        uptake_windows={"PiB": [50, 70]}))
    nodes = wf._get_all_nodes()
    sources = {n.inputs.source_file[0] for n in nodes
               if n.name.startswith("ds_") and hasattr(n.inputs, "source_file")
               and "/pet/" in str(n.inputs.source_file[0])}
    assert sources == {
        "/data/sub-01/ses-baseline/pet/sub-01_ses-baseline_trc-PIB_pet.nii.gz",
        str(named.path)}
    assert {n.inputs.pet_file for n in nodes if n.name == "inputnode"
            and "pet_file" in n.inputs.copyable_trait_names()
            and n.inputs.pet_file} == {str(bare.path), str(named.path)}
    tpl = {n.inputs.out_name for n in nodes if n.name in ("pet_to_template",
                                                           "harmonized_to_template")}
    assert tpl == {
        "sub-01_ses-baseline_trc-PIB_space-MNI152NLin2009aSym_desc-preproc_pet.nii.gz",
        "sub-01_ses-baseline_trc-PIB_space-MNI152NLin2009aSym_desc-harmonized_pet.nii.gz",
        "sub-01_ses-petct_trc-PiB_space-MNI152NLin2009aSym_desc-preproc_pet.nii.gz"}
