"""Parameter vectors from text and the API, and the case fingerprint stores are keyed on."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.core.case import parse_case
from hybrid.core.parameters import Parameter, ParameterSpace, parse_mu
from hybrid.errors import ParameterError

from .conftest import small_case_text

SPACE = ParameterSpace((Parameter("a", 0.0, 1.0), Parameter("b", 0.0, 1.0),
                        Parameter("c", 0.0, 1.0)))


@pytest.mark.parametrize("text,message", [
    ("0.1,,0.3", "--mu: empty value at position 2 of '0.1,,0.3'"),
    (",0.2,0.3", "--mu: empty value at position 1 of ',0.2,0.3'"),
    ("0.1,0.2,", "--mu: empty value at position 3 of '0.1,0.2,'"),
    ("0.1, ,0.3", "--mu: empty value at position 2 of '0.1, ,0.3'"),
    ("a=0.1,b=0.2,a=0.3", "--mu: parameter 'a' is given more than once"),
    ("a=0.1, b =0.2,b=0.3", "--mu: parameter 'b' is given more than once"),
    ("c=0.1,b=0.2,c=0.1,b=0.2", "--mu: parameter 'b' is given more than once"),
    ("a=1=2,a=0.3,b=0,c=0", "--mu: parameter 'a' is given more than once"),
])
def test_parse_mu_refuses_empty_and_repeated_values_exactly(text, message):
    with pytest.raises(ParameterError) as e:
        parse_mu(text, SPACE)
    assert str(e.value) == message


def test_parse_mu_two_fields_with_the_first_empty():
    two = ParameterSpace((Parameter("a", 0.0, 1.0), Parameter("b", 0.0, 1.0)))
    with pytest.raises(ParameterError) as e:
        parse_mu(",0.2", two)
    assert str(e.value) == "--mu: empty value at position 1 of ',0.2'"


def test_parse_mu_reads_names_with_values_containing_equals_signs_as_errors():
    assert np.array_equal(parse_mu("c=0.3,a=0.1,b=0.2", SPACE), [0.1, 0.2, 0.3])
    assert np.array_equal(parse_mu(" a = 0.1 , b=0.2,c=0.3 ", SPACE), [0.1, 0.2, 0.3])
    with pytest.raises(ParameterError, match="cannot read"):
        parse_mu("a=0.1=2,b=0.2,c=0.3", SPACE)
    with pytest.raises(ParameterError, match="expected 3 values"):
        parse_mu("", SPACE)
    with pytest.raises(ParameterError, match="expected 3 values"):
        parse_mu("   ", SPACE)


def test_check_refuses_complex_and_non_numbers_with_its_own_error():
    for bad in (np.array([0.1 + 0.5j, 0.2, 0.3]), np.array([0.1 + 0j, 0.2, 0.3]), [1j, 0, 0]):
        with pytest.raises(ParameterError) as e:
            SPACE.check(bad, where="x0")
        assert str(e.value) == "x0: parameters must be real numbers, got complex values"
    with pytest.raises(ParameterError) as e:
        SPACE.check(np.array(["0.1", "x", "0.3"]), where="x0")
    assert str(e.value) == "x0: parameters must be real numbers, got <U3 values"
    assert np.array_equal(SPACE.check(np.array([0, 1, 0])), [0.0, 1.0, 0.0])  # ints are real


def test_case_fingerprint_is_the_store_contract(tmp_path):
    """Stores on disk hold exactly these keys: renaming one orphans every existing store."""
    text = small_case_text(blocks=2, cells=12) + "\n[observations]\npoints = [[0.25, 0.5]]\n"
    c = parse_case(text, tmp_path / "c.toml")
    fp = c.fingerprint()
    assert list(fp) == ["mesh", "physics", "parameters", "qoi", "observations", "model"]
    assert fp["model"]["reference"] == "thermal_block"
    # stores of the former hand-written thermal block have no "model" key and still match
    old = {k: v for k, v in fp.items() if k != "model"}
    assert c.fingerprint_against(old) == old
    assert c.fingerprint_against(fp) == fp
    # the mesh keys stores were written with (no "interval"/"extent" unless the mesh has one)
    assert fp["mesh"] == c.mesh.model_dump(exclude={"interval", "extent"}) and \
        fp["mesh"]["cells"] == 12
    assert set(fp["mesh"]) == {"type", "cells", "cell_type", "file", "gdim"}
    assert fp["physics"] == {"model": "thermal_block", "blocks": 2, "degree": 1,
                             "source": 1.0}
    assert fp["parameters"] == c.parameters.to_dict()
    assert fp["qoi"] == ["mean", "block_mean_0"]
    assert fp["observations"]["points"] == [[0.25, 0.5]]
    other = parse_case(text.replace("cells = 12", "cells = 24"), tmp_path / "d.toml")
    assert other.fingerprint()["mesh"] != fp["mesh"]
    assert {k for k in fp if fp[k] != other.fingerprint()[k]} == {"mesh"}


def test_a_plugin_case_fingerprint_carries_the_model_reference_and_source_hash():
    """A store of a plug-in must refuse to resume when the model's source changes."""
    import hashlib

    import hybrid.model.library.nonlinear_diffusion as nd
    from hybrid.core.case import load_case

    from .conftest import ROOT

    fp = load_case(ROOT / "cases" / "nonlinear_diffusion.toml").fingerprint()
    assert list(fp) == ["mesh", "physics", "parameters", "qoi", "observations", "model"]
    sha = hashlib.sha256(open(nd.__file__, "rb").read()).hexdigest()
    assert fp["model"] == {"reference": "nonlinear_diffusion", "sha256": sha}


@pytest.mark.parametrize("model,message", [
    ("5", "physics.model: expected a model name or reference (got 5)"),
    ('"heat_rodx"', "physics.model: unknown physics model 'heat_rodx'; expected one of "
                    "['elasticity', 'gaussian_source', 'heat', 'nonlinear_diffusion', "
                    "'thermal_block'], an entry point "
                    "of group hybrid.models, 'file.py:Class' or 'package.module:Class'"),
    ('"MyModel"', "physics.model: unknown physics model 'MyModel'; expected one of "
                  "['elasticity', 'gaussian_source', 'heat', 'nonlinear_diffusion', "
                  "'thermal_block'], an entry point "
                  "of group hybrid.models, 'file.py:Class' or 'package.module:Class'"),
])
def test_an_unknown_or_malformed_model_name_is_one_exact_line(tmp_path, model, message):
    from hybrid.errors import CaseError

    text = small_case_text().replace('model = "thermal_block"', f"model = {model}")
    with pytest.raises(CaseError) as e:
        parse_case(text, tmp_path / "c.toml")
    assert str(e.value) == f"{tmp_path / 'c.toml'}: {message}"
