import io
import pickle

import pytest
import torch

from fashion import model
from fashion.errors import FashionError


@pytest.mark.parametrize("batch", [1, 4, 33])
def test_output_shape(batch):
    assert model.Net()(torch.zeros(batch, 1, 28, 28)).shape == (batch, 10)


def test_parameter_names_are_the_tutorials():
    assert [n for n, _ in model.Net().named_parameters()] == [
        f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3")
        for kind in ("weight", "bias")]


def test_initial_net_depends_on_the_seed_alone():
    a = model.initial_net(1)
    torch.rand(5)  # the global generator's state must not matter ...
    b, c = model.initial_net(1), model.initial_net(2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    state = torch.get_rng_state()  # ... nor change
    model.initial_net(3)
    assert torch.equal(torch.get_rng_state(), state)


def test_save_is_byte_identical_and_load_round_trips(tmp_path):
    net = model.initial_net(0)
    model.save(net, tmp_path / "a.pt")
    model.save(net, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = model.load(tmp_path / "a.pt")
    assert all(torch.equal(x, y) for x, y in zip(net.parameters(), loaded.parameters()))


def test_damaged_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    model.save(model.initial_net(0), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(FashionError, match="is not a loadable weights file"):
        model.load(path)
    with pytest.raises(FashionError, match="not found"):
        model.load(tmp_path / "absent.pt")


def test_other_architecture_gets_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(FashionError, match=r"weights of another architecture \(bias, conv1.bias, "
                                            r"conv1.weight and 9 more differ from the Net's\)"):
        model.load(path)
    state = model.initial_net(0).state_dict()
    state["fc3.weight"] = torch.zeros(9, 84)  # one layer of another shape
    torch.save(state, path)
    with pytest.raises(FashionError, match=r"architecture \(fc3.weight differs from"):
        model.load(path)


class _RunsCode:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_a_file_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"conv1.weight": _RunsCode()}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(FashionError, match="not a loadable weights file"):
        model.load(path)
    assert "code ran" not in capsys.readouterr().out
