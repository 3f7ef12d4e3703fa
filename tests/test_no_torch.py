"""The device side runs without torch: import, native STFT, model files, CLI."""

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from kboost_rt.config import PAPER_BOOSTED
from kboost_rt.reference import build_model, save_model

# Makes every `import torch...` fail, as in an environment without it.
BLOCK_TORCH = textwrap.dedent("""
    import sys
    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, BlockTorch())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd="/",
    )


def test_device_side_imports_and_runs_without_torch(tmp_path):
    torch.manual_seed(0)
    save_model(build_model(PAPER_BOOSTED), PAPER_BOOSTED, tmp_path / "boosted")
    result = run_without_torch(f"""
        import numpy as np
        import kboost_rt
        from kboost_rt import _native
        from kboost_rt.cli import main
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("torch was importable")
        files = kboost_rt.load_model_files({str(tmp_path / "boosted")!r})
        assert files.config.role == "boosted", files.config
        x = np.random.default_rng(0).standard_normal((2, 1280)).astype(np.float32)
        y = _native.istft(_native.stft(x), 1280)
        assert np.abs(y[:, 64:] - x[:, 64:]).max() < 1e-5
        import kboost_rt.client, kboost_rt.evaluate, kboost_rt.process  # noqa: F401
        import kboost_rt.protocol, kboost_rt.relay, kboost_rt.server  # noqa: F401
        assert main(["models"]) == 0
        assert main(["info", {str(tmp_path / "boosted")!r}]) == 0
        assert "torch" not in sys.modules
        print("device side OK")
    """)
    assert result.returncode == 0, result.stderr
    assert "device side OK" in result.stdout


def test_torch_commands_say_what_is_missing():
    result = run_without_torch("""
        from kboost_rt.cli import main
        raise SystemExit(main(["train", "separate-small"]))
    """)
    assert result.returncode == 2
    assert "needs PyTorch" in result.stderr and "Traceback" not in result.stderr


def test_cli_entry_point_is_installed():
    cli = Path(sys.executable).parent / "kboost-rt"
    result = subprocess.run([cli, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("models", "info", "demo"):
        assert command in result.stdout
