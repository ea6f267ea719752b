"""Independent cached models train side by side in worker processes with the cache's fixed thread count: a model
trained beside another is bit-identical to the same model trained alone, the results come back in the order
asked, and a worker's mistake in a config comes back as one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sphereface_lib.errors import UserError, run_command
from sphereface_lib.training import train_cached, train_cached_many, train_missing
from test_training import same_state
from test_training_data import make_patterns, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_patterns(tmp_path_factory.mktemp("data") / "patterns", identities=4, per_identity=8).root


def _config(data: Path, **over: object):
    return tiny_config(data, Path("unused"), **{"optim__iterations": 12, "optim__lr_steps": "[8]", **over})


@pytest.mark.slow
def test_a_model_trained_beside_another_is_bit_identical_to_it_trained_alone(data: Path, tmp_path: Path) -> None:
    model, other = _config(data), _config(data, optim__lr=0.01)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's thread count must not reach a cached model (1 and 2 give other bits)
    try:
        alone = train_cached(model, tmp_path / "alone")
        assert torch.get_num_threads() == 2  # restored after training
    finally:
        torch.set_num_threads(threads)
    assert train_missing([other, model], tmp_path / "pool", workers=2) == 2
    assert train_missing([other, model], tmp_path / "pool", workers=2) == 0  # cached now: nothing to train
    results = train_cached_many([other, model, other], tmp_path / "pool", workers=2)
    assert [r.config.optim.lr for r in results] == [0.01, 0.05, 0.01]  # in the order asked
    assert same_state(results[1].backbone.state_dict(), alone.backbone.state_dict())
    assert same_state(results[1].head.state_dict(), alone.head.state_dict())
    assert not same_state(results[0].backbone.state_dict(), alone.backbone.state_dict())


@pytest.mark.slow
def test_a_workers_mistake_comes_back_as_one_error_line(data: Path, tmp_path: Path, capsys) -> None:
    bad = _config(data, **{"head.kwargs": "{m: 7}"})

    def main(argv: object) -> int:
        good = _config(data, optim__iterations=2, optim__lr_steps="[1]")
        train_cached_many([good, bad], tmp_path / "cache", workers=2)
        return 0

    assert run_command(main) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "ASoftmax margin m must be an integer" in err[0], err
    with pytest.raises(UserError):
        train_missing([bad, bad.replace("optim.lr=0.02")], tmp_path / "cache", workers=2)


@pytest.mark.slow
def test_a_verification_table_trains_its_rows_and_seeds_side_by_side_first(data: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sphereface_lib.companion import experiments as E
    from sphereface_lib.data.packed import PackedDataset
    from sphereface_lib.training import cache as cache_module

    pooled: list[int] = []
    monkeypatch.setattr(E, "train_missing", lambda *a, **k: pooled.append(train_missing(*a, **k)))
    monkeypatch.setattr(cache_module, "train", lambda config: pytest.fail("trained here, not in the pool"))
    bench = E.Benchmark(name="patterns", train=PackedDataset(data))
    recipe = E.Recipe(backbone="sphereface4", width=0.125, feat_dim=16, iterations=4, batch_size=16)
    table = E.verification_table(bench, ["softmax"], [0, 1], recipe, tmp_path, protocols=())
    assert pooled == [2] and table[["row", "seed"]].values.tolist() == [["softmax", 0], ["softmax", 1]]
