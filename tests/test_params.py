import re

import pytest

from fashion import params
from fashion.errors import ParamsError
from tests.conftest import ROOT


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_committed_params_are_valid_and_complete():
    values = params.load(ROOT / "params.yaml", tuple(params.RULES))
    assert values == {"seed": 0, "lr": 0.001, "momentum": 0.9, "batch_size": 4, "epochs": 1,
                      "log_every": 4000, "embedding_samples": 100, "device": "auto"}


def test_written_params_load_back_unchanged(tmp_path):
    values = {"seed": 7, "lr": 1e-05, "momentum": 0.0, "batch_size": 64, "epochs": 2,
              "log_every": 10**9, "embedding_samples": 5, "device": "cpu"}
    params.write(tmp_path / "params.yaml", values)
    assert params.load(tmp_path / "params.yaml", tuple(params.RULES)) == values


def test_readme_params_table_matches_params_yaml_and_the_rules():
    readme = (ROOT / "README.md").read_text()
    values = params.load(ROOT / "params.yaml", tuple(params.RULES))
    for key, value in values.items():
        rule = params.RULES[key]
        row = rf"^\| `{key}` \| `{value}` \| {re.escape(rule.allowed)} \| {re.escape(rule.help)}"
        assert re.search(row, readme, re.M), f"README's row for {key} differs from params.yaml or RULES"


def test_returns_only_requested_keys(tmp_path):
    path = write(tmp_path, "lr: 0.01\nseed: 3\n")
    assert params.load(path, ("lr",)) == {"lr": 0.01}


def test_yaml_exponent_is_a_float(tmp_path):
    # PyYAML would read 1e-3 as a string; DVC's parser, and ours, read a float.
    assert params.load(write(tmp_path, "lr: 1e-3\n"), ("lr",)) == {"lr": 0.001}


def test_integer_accepted_for_float(tmp_path):
    assert params.load(write(tmp_path, "lr: 1\n"), ("lr",)) == {"lr": 1.0}


@pytest.mark.parametrize("text, key", [
    ("lr: abc", "lr"), ("lr: 0", "lr"), ("lr: -0.1", "lr"),
    # Beyond float32, the weights' type: the update would fail.
    ("lr: 1e300", "lr"), ("lr: 3.5e38", "lr"),
    ("batch_size: 0", "batch_size"), ("batch_size: 4.5", "batch_size"), ("batch_size: true", "batch_size"),
    ("epochs: 0", "epochs"), ("momentum: 1", "momentum"), ("momentum: -0.1", "momentum"),
    ("log_every: 0", "log_every"), ("embedding_samples: 0", "embedding_samples"),
    ("seed: -1", "seed"), ("seed: 1.5", "seed"), ("seed: 9223372036854775808", "seed"),
    ("device: tpu", "device"), ("lr: null", "lr"),
    # Beyond what PyTorch's int64 and a double hold: caught here, not as an overflow later.
    ("batch_size: 9223372036854775808", "batch_size"), ("epochs: 100000000000000000000", "epochs"),
    ("lr: 1" + "0" * 400, "lr"), ("lr: " + str(2**1024 - 1), "lr"),
])
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, text, key):
    with pytest.raises(ParamsError, match=rf"{key} must be {re.escape(params.RULES[key].allowed)}"):
        params.load(write(tmp_path, text + "\n"), ())


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"unknown key 'batchsize'; did you mean 'batch_size'\?"):
        params.load(write(tmp_path, "batchsize: 4\n"), ())
    with pytest.raises(ParamsError, match=r"unknown key 'learning_rate'.*known keys: seed, lr"):
        params.load(write(tmp_path, "learning_rate: 0.01\n"), ())


def test_missing_key_names_it(tmp_path):
    with pytest.raises(ParamsError, match=r"lacks lr \(a number > 0 that float32 holds"):
        params.load(write(tmp_path, "seed: 1\n"), ("seed", "lr"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.load(tmp_path / "absent.yaml", ())
    with pytest.raises(ParamsError, match=r"is not valid YAML \(line 2: while parsing a flow sequence, "
                                          r"expected ',' or ']', but got '<stream end>'\); fix it there$"):
        params.load(write(tmp_path, "lr: [0.1\n"), ())
    with pytest.raises(ParamsError, match=r"is not valid YAML \(line 2: while constructing a mapping, "
                                          r"found duplicate key \"lr\" with value \"0.02\" "
                                          r"\(original value: \"0.01\"\)\)"):
        params.load(write(tmp_path, "lr: 0.01\nlr: 0.02\n"), ())
    with pytest.raises(ParamsError, match="must be a mapping"):
        params.load(write(tmp_path, "- lr\n"), ())
    with pytest.raises(ParamsError, match="must be a mapping"):
        params.load(write(tmp_path, ""), ())


def alias_bomb(levels: int = 9) -> str:
    """Each anchor a list of nine aliases of the one before: 9**9 values once expanded."""
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                for i in range(1, levels)]
    return "\n".join(lines) + f"\nlr: *a{levels - 1}\n"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text, message", [
    (alias_bomb(), r"params.yaml, line 1: YAML anchors and aliases \(& and \*\) are not accepted"),
    ("lr: &rate 0.01\nmomentum: *rate\n", r"line 1: YAML anchors and aliases"),
    ("lr: " + "[" * 100_000 + "]" * 100_000 + "\n", r"line 1: a list or mapping nested in a "
                                                    r"value; params are flat `key: value` lines of single values"),
    ("seed: 0\nlr:\n  value: [0.01]\n", r"params.yaml, line 3: a list or mapping nested in a"),
], ids=["alias-bomb", "alias", "deep-nesting", "nested-mapping"])
def test_aliases_and_nesting_are_refused_without_expanding(tmp_path, text, message):
    with pytest.raises(ParamsError, match=message):
        params.load(write(tmp_path, text), ())


def test_a_long_bad_value_is_shown_shortened(tmp_path):
    with pytest.raises(ParamsError, match=r"got 'xxxx.*\.\.\. \(1000002 characters\)$"):
        params.load(write(tmp_path, "lr: " + "x" * 1_000_000 + "\n"), ())


def test_the_help_epilog_lists_each_key_with_its_rule_aligned_and_wrapped():
    lines = params.epilog(("seed", "embedding_samples")).splitlines()
    assert lines[:2] == ["\b", "Reads these keys of the params file:"]  # \b: click keeps lines
    # Each key in a column 4 wider than the longest key, its rule wrapped to 79 characters in
    # the next column: the rule's words, in order, and nothing else.
    starts = [i for i, line in enumerate(lines) if not line.startswith(" " * 21)][2:]
    assert [lines[i][:21] for i in starts] == ["  seed" + " " * 15, "  embedding_samples  "]
    for key, (start, end) in zip(("seed", "embedding_samples"), zip(starts, starts[1:] + [None])):
        rows = lines[start:end]
        assert len(rows) > 1 and all(len(row) <= 79 and row[21] != " " for row in rows)
        rule = params.RULES[key]
        assert " ".join(row[21:] for row in rows) == f"{rule.help}; {rule.allowed}"
        # Filled: no row could have taken the next row's first word.
        assert all(len(row) + 1 + len(after[21:].split()[0]) > 79 for row, after in zip(rows, rows[1:]))


@pytest.mark.parametrize("key, hint", [
    ("learning_rate", "did you mean 'lr'? "),      # a synonym from other tools
    ("batchsize", "did you mean 'batch_size'? "),  # a typo: the one closest key
    ("colour", ""),                                 # nothing close: no guess
])
def test_an_unknown_key_s_message_in_full(key, hint):
    with pytest.raises(ParamsError) as refused:
        params.validate({key: 1})
    assert str(refused.value) == (f"params.yaml: unknown key '{key}'; {hint}known keys: seed, lr, "
                                  "momentum, batch_size, epochs, log_every, embedding_samples, device")


def test_load_s_messages_name_the_file_and_every_missing_key(tmp_path):
    path = write(tmp_path, "lr: -1\n")
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value) == f"{path}: lr must be {params.RULES['lr'].allowed}, got -1"
    with pytest.raises(ParamsError) as refused:
        params.load(write(tmp_path, "momentum: 0.5\n"), ("seed", "momentum", "lr"))
    assert str(refused.value) == (f"{path} lacks seed ({params.RULES['seed'].allowed}); "
                                  f"lr ({params.RULES['lr'].allowed})")
    path.write_bytes(b"lr: 0.1\n\xff\n")
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value) == f"{path} is not UTF-8 text (byte 8): save it as UTF-8"


def test_yaml_errors_without_a_line_or_context_are_one_line_too(tmp_path):
    path = write(tmp_path, "a: b: c\n")
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value) == f"{path} is not valid YAML (line 1: mapping values are not allowed here); fix it there"
    path = write(tmp_path, "lr: 0.1\x07\n")  # the reader's error: no line, the position instead
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value) == (f"{path} is not valid YAML: unacceptable character #x0007: special "
                                  "characters are not allowed in \"<unicode string>\", position 7")


def test_values_are_shown_whole_up_to_60_characters():
    for value, shown in (("x" * 58, "'" + "x" * 58 + "'"), ("x" * 59, "'" + "x" * 49 + "... (61 characters)")):
        with pytest.raises(ParamsError) as refused:
            params.validate({"lr": value})
        assert str(refused.value).endswith(f", got {shown}")


def test_two_list_values_are_each_refused_as_values_not_as_nesting(tmp_path):
    with pytest.raises(ParamsError, match=r": lr must be .*, got \[0.1\]$"):
        params.load(write(tmp_path, "lr: [0.1]\nmomentum: [0.9]\nseed: {a: 1}\n"), ())
    with pytest.raises(ParamsError) as refused:
        params.load(write(tmp_path, "lr: &rate 0.01\n"), ())
    assert str(refused.value).endswith(": YAML anchors and aliases (& and *) are not accepted; params "
                                       "are flat `key: value` lines, so write each value out")



def test_a_nested_value_after_a_list_value_is_still_refused_as_nesting(tmp_path):
    # The depth count comes back to the mapping's after each list.
    with pytest.raises(ParamsError, match=r"params.yaml, line 2: a list or mapping nested in a value"):
        params.load(write(tmp_path, "lr: [0.1]\nmomentum: [[0.9]]\n"), ())


def test_a_second_document_is_refused_as_yaml_not_as_nesting(tmp_path):
    path = write(tmp_path, "lr: 0.1\n---\nmomentum: [0.9]\n")
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value) == (f"{path} is not valid YAML (line 2: expected a single document in "
                                  "the stream, but found another document); fix it there")


def test_a_python_object_tag_is_never_built(tmp_path):
    # The safe loader knows no python/ tags: refused as YAML, never turned into a value.
    path = write(tmp_path, 'lr: !!python/object/apply:os.system ["echo hi"]\n')
    with pytest.raises(ParamsError) as refused:
        params.load(path, ())
    assert str(refused.value).startswith(
        f"{path} is not valid YAML (line 1: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'")
