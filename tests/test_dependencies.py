"""What a client installs: the core dependencies only. Extras are blocked from import in a real process.

An edge client (a SuperNode with its own data) must run without the ``simulation``, ``privacy``, ``analysis`` and
``tracking`` extras; a command that needs one says which to install, in one line, with exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

#: top-level modules that only the extras bring (flwr-datasets pulls datasets, pandas, matplotlib and pyarrow)
EXTRAS_ONLY = ["ray", "flwr_datasets", "datasets", "pandas", "matplotlib", "pyarrow", "sklearn", "dp_accounting",
               "tensorboard", "scipy"]

BLOCKER = """
import importlib.abc, importlib.machinery, sys
BLOCKED = set({blocked!r})
class Missing(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}} (blocked by the test)", name=spec.name)
    def exec_module(self, module):
        pass
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, Missing())
sys.meta_path.insert(0, Blocked())
"""


TINY = ["data.image_size=32", "data.num_tasks=2", "data.classes_per_task=2", "data.max_train_per_class=8",
        "data.max_test_per_class=4", "train.epochs=1"]


def run_blocked(blocked: list[str], body: str, **env: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=blocked) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_an_edge_client_runs_without_any_extra(tmp_path):
    """The ClientApp imports, a node with its own data builds its stream, and single-device training runs."""
    proc = run_blocked(EXTRAS_ONLY, f"""
        from fedcl.config import build_config
        from fedcl.builder import training_experience
        from fedcl.data.datasets import SYSTEM_FASHION_MNIST
        from fedcl.federation.settings import FedRunConfig
        import fedcl.federation.client_app, fedcl.federation.server_app
        from fedcl.cli import main
        cfg = build_config("fedsmoke", None, {TINY!r}, schema=FedRunConfig)
        exp = training_experience(cfg, 0, 0, data_root=str(SYSTEM_FASHION_MNIST))
        assert len(exp) > 0, "no training data"
        code = main(["train", "-q", "-p", "default", "-o", {str(tmp_path / "edge")!r}, *[a for o in {TINY!r} for a in ("--set", o)]])
        assert code == 0, code
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]  # any import of a blocked module raises in that process
    r = json.loads((tmp_path / "edge" / "results.json").read_text())
    # -q: one line, the headline figures and where the results are
    line = f"final accuracy {r['final_avg_accuracy']:.3f}, forgetting {r['avg_forgetting']:.3f}; results: {tmp_path / 'edge' / 'results.json'}"
    assert proc.stdout.splitlines() == [line]


def test_a_node_answers_the_servers_query_without_importing_model_code():
    """In a deployment every message starts a ClientApp process: the query (who is this node?) needs no torch."""
    proc = run_blocked(["torch", "torchvision", "timm"], """
        from flwr.app import Context, Message, RecordDict
        from flwr.common import MessageType
        from fedcl.federation.client_app import app
        from fedcl.federation.flower_adapter import task_identity
        with task_identity(1, 1, 1):
            msg = Message(RecordDict(), 1, MessageType.QUERY)
        context = Context(1, 1, {"partition-id": 4, "data-root": "/data/cam"}, RecordDict(), {})
        print(dict(app(msg, context).content.metric_records["metrics"]))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "{'partition-id': 4, 'own-data': 1}"


def test_partitions_are_computed_without_plotting_and_read_back_without_flwr_datasets(tmp_path):
    """The first process to split a dataset imports flwr-datasets' partitioners but not its plotting (matplotlib,
    seaborn: 2.3 CPU-s); simulation workers and ClientApp messages after it read the client partitions from the
    cache folder: none of the ~3 s of imports flwr-datasets pulls (HF datasets, pandas, scipy, seaborn)."""
    body = f"""
        from fedcl.config import build_config
        from fedcl.builder import client_stream
        from fedcl.federation.settings import FedRunConfig
        cfg = build_config("fedsmoke", None, {TINY!r}, schema=FedRunConfig)
        for c in range(cfg.federation.num_clients):
            print([e.data.labels.tolist() for e in client_stream(cfg, c)])
    """
    from fedcl.builder import benchmark_for
    from fedcl.config import build_config
    from fedcl.federation.partitions import client_streams
    from fedcl.federation.settings import FedRunConfig

    cfg = build_config("fedsmoke", None, TINY, schema=FedRunConfig)
    f = cfg.federation
    in_process = client_streams(benchmark_for(cfg), f.partition, f.num_clients, f.dirichlet_alpha, f.shards_per_client, cfg.seed,
                                cache=None)  # computed here, through a plain import of flwr-datasets
    first = run_blocked(["matplotlib", "seaborn"], body, FEDCL_DATA=str(tmp_path))
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(list((tmp_path / "partitions").glob("*.npz"))) == 1, list(tmp_path.rglob("*"))
    later = run_blocked(["flwr_datasets", "datasets", "pandas", "scipy", "seaborn", "matplotlib"], body, FEDCL_DATA=str(tmp_path))
    assert later.returncode == 0, later.stderr[-3000:]
    expected = [str([e.data.labels.tolist() for e in stream]) for stream in in_process]
    assert first.stdout.strip().splitlines() == expected == later.stdout.strip().splitlines() and len(expected) == f.num_clients


MISSING = [  # (blocked modules, command line, the extra to name)
    (["flwr_datasets"], ["simulate", "-p", "fedsmoke", "--set", "federation.backend=inline"], "simulation"),
    (["ray"], ["simulate", "-p", "fedsmoke", "--set", "federation.backend=ray"], "simulation"),
    (["sklearn"], ["train", "-p", "smoke", "--set", "data.dataset=digits", "--set", "data.image_size=32"], "simulation"),
    (["dp_accounting"], ["simulate", "-p", "fedsmoke", "--set", "federation.backend=inline", "--set", "federation.dp_clipping_norm=1.0",
                         "--set", "federation.dp_noise_multiplier=0.5"], "privacy"),
]


def test_a_missing_extra_is_named_in_one_line_before_any_work(tmp_path):
    """Each command in one process (imports are paid once), with only its extra blocked; stderr is captured per command.
    An empty cache folder: client partitions that an earlier run left on disk need no flwr-datasets."""
    proc = run_blocked([], f"""
        import contextlib, io, json
        from fedcl.cli import main
        seen = []
        for k, (blocked, args, extra) in enumerate({MISSING!r}):
            BLOCKED.clear(); BLOCKED.update(blocked)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main([*args, "-q", "-o", {str(tmp_path)!r} + f"/out{{k}}"])
            seen.append([code, err.getvalue(), extra])
        print(json.dumps(seen))
    """, FEDCL_DATA=str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(seen) == len(MISSING)
    for code, err, extra in seen:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("fedcl: error: ") and f"pip install 'fedcl[{extra}]'" in lines[0], lines
    assert not any(p.name.startswith("out") and any(p.iterdir()) for p in tmp_path.iterdir()), "work began before the check"
    assert not (tmp_path / "cache" / "partitions").exists()


def test_a_config_mistake_is_refused_before_any_model_code_is_imported(tmp_path):
    """`fedcl train`/`simulate` check the config before importing torch (seconds): a mistake is answered at once."""
    cases = [["train", "--config", str(tmp_path / "missing.toml")], ["simulate", "--config", str(tmp_path / "missing.toml")],
             ["train", "--set", "train.lr=inf"], ["simulate", "--set", "train.lrr=1"], ["train", "-p", "nosuchpreset"]]
    proc = run_blocked(["torch", "torchvision", "timm", "ray", "flwr_datasets"], f"""
        import contextlib, io, json
        from fedcl.cli import main
        seen = []
        for args in {cases!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                seen.append([main([*args, "-q", "-o", {str(tmp_path / "out")!r}]), err.getvalue()])
        print(json.dumps(seen))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    for (code, err), args in zip(seen, cases, strict=True):
        assert code == 2 and err.startswith("fedcl: error: ") and err.count("\n") == 1, (args, err)
        assert "torch" not in err and "blocked" not in err, err
    assert not (tmp_path / "out").exists()


def test_listing_and_checking_backbone_names_imports_neither_timm_nor_torchvision():
    """`fedcl list` and an unknown backbone name are answered without the 3 s of timm's imports."""
    proc = run_blocked(["timm", "torchvision"], """
        import contextlib, io
        from fedcl.backbones import create_backbone
        from fedcl.cli import main
        from fedcl.errors import ConfigError
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["list"]) == 0
        assert "efficientnet_lite0" in out.getvalue()
        try:
            create_backbone("resnet9000")
        except ConfigError as exc:
            print("refused:", exc)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("refused: ") and "resnet9000" in proc.stdout


def test_a_backbone_is_built_and_trained_without_importing_torch_dynamo_and_compiling_still_works():
    """timm, torchvision and torch.optim touch torch._dynamo (2 CPU-s of every ClientApp message); fedcl defers it
    until something uses it. The stand-ins must behave as the real thing once it is loaded."""
    proc = run_blocked([], """
        import sys, torch
        from fedcl.backbones import create_backbone
        from fedcl.config import TrainConfig
        from fedcl.learner import create_optimizer
        from fedcl.precision import plan_execution
        from fedcl.deferred_dynamo import dynamo_deferred
        backbone = create_backbone("efficientnet_lite0")
        assert backbone(torch.zeros(1, 3, 32, 32)).shape == (1, 1280)
        assert "torch._dynamo" not in sys.modules, "building and running the default backbone imported torch._dynamo"
        plan = plan_execution(torch.device("cpu"))
        def train(name, scaled):  # two steps (with weight decay; loss scaling as train.precision=fp16 does)
            w = torch.nn.Parameter(torch.full((3,), 2.0))
            optimizer = create_optimizer([{"params": [w]}], TrainConfig(optimizer=name, lr=0.5, weight_decay=0.1))
            for _ in range(2):
                plan.backward_step((w * w).sum(), optimizer, torch.amp.GradScaler("cpu") if scaled else None)
            return w.detach().clone()
        cases = [("adam", False), ("sgd", False), ("adam", True)]
        deferred = {case: train(*case) for case in cases}
        assert "torch._dynamo" not in sys.modules, "training with torch.optim imported torch._dynamo"
        with dynamo_deferred():  # as torchvision and timm decorate functions at import
            @torch.compiler.disable
            def add_one(x):
                return x + 1
            assert add_one(torch.ones(1)).item() == 2.0  # called while the stand-ins are in place
        assert add_one(torch.ones(1)).item() == 2.0
        assert "torch._dynamo" not in sys.modules, "calling a function decorated meanwhile imported torch._dynamo"
        with dynamo_deferred():  # any other use of torch._dynamo meanwhile loads the real package
            from torch._dynamo import config, graph_break as kept_graph_break  # (the second from the stand-in object)
        assert "torch._dynamo" in sys.modules and hasattr(config, "cache_size_limit") and hasattr(torch._dynamo, "optimize")
        roi_align = sys.modules["torchvision.ops.roi_align"]  # (the package's attribute of that name is the function)
        from torch._dynamo.utils import is_compile_supported
        assert roi_align.is_compile_supported is not is_compile_supported
        assert [roi_align.is_compile_supported(d) for d in ("cpu", "meta")] == [is_compile_supported(d) for d in ("cpu", "meta")]
        from torch._dynamo.testing import CompileCounter
        counter = CompileCounter()
        compiled = torch.compile(lambda x: add_one(x * 2) * 3, backend=counter)
        assert compiled(torch.ones(1)).item() == 9.0
        def adding(x):  # Optimizer.add_param_group was disabled by torch.optim while the stand-ins were in place
            y = x * 2
            optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))]})
            return y * 3
        def breaking(x):
            y = x * 2
            kept_graph_break()
            return y * 3
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
        counts = []
        for fn in (adding, breaking):
            fn_counter = CompileCounter()
            assert torch.compile(fn, backend=fn_counter)(torch.ones(1)).item() == 6.0
            counts.append(fn_counter.frame_count)
        plain = {case: train(*case) for case in cases}  # the same steps, torch._dynamo loaded: plain torch.optim
        assert all(torch.equal(plain[case], deferred[case]) for case in cases), (plain, deferred)
        print("graphs", counter.frame_count, *counts)
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # functions disabled meanwhile stay disabled under torch.compile, and a graph_break kept from the window breaks the
    # graph: a graph before each and one after it (add_one traced: 1 graph; add_param_group traced: 3; no break: 1)
    assert proc.stdout.split()[-4:] == ["graphs", "2", "2", "2"]
