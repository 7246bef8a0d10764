#!/usr/bin/env python3
"""Generates the project's own golden cases (format embedding-golden/1) with PyTorch.

usage: golden.py OUT_DIR   (run by `cargo xtask golden` with the torch 2.9.0 venv's python)
Writes OUT_DIR/embedding/*.json and OUT_DIR/optimizer/*.json, computed on the CPU in float32
(and OUT_DIR/half/*.json in float16 and bfloat16)
by torch.nn.functional.embedding and nn.Embedding(sparse=True) with torch.optim, exactly as
tests/golden/README.md describes.
"""
import json, os, sys
import torch
import torch.nn.functional as F

SOURCE = f"torch {torch.__version__} F.embedding, CPU float32 (xtask/golden.py)"


def t(x):
    return {"shape": list(x.shape), "data": x.reshape(-1).tolist()}


def embedding_case(name, V, D, indices, padding_idx=None, max_norm=None, norm_type=2.0,
                   scale_grad_by_freq=False, sparse=False, custom_pad_row=False, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g) * scale
    pad = None if padding_idx is None else (padding_idx + V if padding_idx < 0 else padding_idx)
    if pad is not None and not custom_pad_row:
        weight[pad] = 0.0
    indices = torch.tensor(indices, dtype=torch.long)
    grad_output = torch.randn(*indices.shape, D, generator=g)
    w = weight.clone().requires_grad_(True)
    with torch.no_grad():
        w_work = w.detach().clone()
    w_work.requires_grad_(True)
    # F.embedding renormalises w_work in place; PyTorch refuses sparse with
    # scale_grad_by_freq, so the gradient is always computed dense and sliced to rows.
    out = F.embedding(indices, w_work, padding_idx=padding_idx, max_norm=max_norm,
                      norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=False)
    (out * grad_output).sum().backward()
    expected = {
        "output": t(out.detach()),
        "weight_after_forward": t(w_work.detach()),
        "weight_grad": t(w_work.grad),
    }
    if sparse:
        ids = torch.unique(indices.reshape(-1))
        if pad is not None:
            ids = ids[ids != pad]
        expected["weight_grad_rows"] = {"ids": t(ids), "values": t(w_work.grad[ids])}
    return {
        "format": "embedding-golden/1", "kind": "embedding", "name": name, "source": SOURCE,
        "config": {"num_embeddings": V, "embedding_dim": D, "padding_idx": padding_idx,
                   "max_norm": max_norm, "norm_type": norm_type,
                   "scale_grad_by_freq": scale_grad_by_freq, "sparse": sparse},
        "weight": t(weight), "indices": t(indices), "grad_output": t(grad_output),
        "expected": expected,
    }


def error_case(name, op, config, expect, indices=None):
    case = {"format": "embedding-golden/1", "kind": "error", "name": name, "op": op,
            "config": config, "expect_error": expect,
            "source": f"torch {torch.__version__} raises for this input (xtask/golden.py)"}
    if indices is not None:
        case["indices"] = {"shape": [len(indices)], "data": indices}
    # Check that PyTorch really refuses it.
    try:
        V, D = config["num_embeddings"], config["embedding_dim"]
        emb = torch.nn.Embedding(V, D, padding_idx=config.get("padding_idx"))
        if indices is not None:
            emb(torch.tensor(indices))
    except (AssertionError, IndexError, RuntimeError):
        return case
    raise SystemExit(f"{name}: PyTorch accepted the input")


def cases():
    g = torch.Generator().manual_seed(42)
    rnd = lambda V, *shape: torch.randint(0, V, shape, generator=g).tolist()
    yield embedding_case("own_plain_1d", 9, 4, rnd(9, 7))
    yield embedding_case("own_plain_2d", 11, 3, rnd(11, 3, 5), seed=1)
    yield embedding_case("own_plain_3d", 13, 5, rnd(13, 2, 2, 3), seed=2)
    yield embedding_case("own_plain_4d", 8, 2, rnd(8, 2, 2, 2, 2), seed=3)
    yield embedding_case("own_padding_first", 6, 3, [0, 1, 0, 5, 0], padding_idx=0, seed=4)
    yield embedding_case("own_padding_last_negative", 6, 3, [5, 1, 5, 2], padding_idx=-1, seed=5)
    yield embedding_case("own_padding_custom_row", 5, 3, [1, 1, 4, 2], padding_idx=1,
                         custom_pad_row=True, seed=6)
    yield embedding_case("own_max_norm_l2", 20, 6, rnd(20, 4, 5), max_norm=1.0, seed=7, scale=2.0)
    yield embedding_case("own_max_norm_l1", 20, 6, rnd(20, 12), max_norm=2.5, norm_type=1.0,
                         seed=8, scale=2.0)
    yield embedding_case("own_max_norm_inf", 20, 6, rnd(20, 12), max_norm=0.8,
                         norm_type=float("inf"), seed=9, scale=2.0)
    yield embedding_case("own_max_norm_p3", 20, 6, rnd(20, 12), max_norm=1.2, norm_type=3.0,
                         seed=10, scale=2.0)
    yield embedding_case("own_max_norm_p_half", 20, 6, rnd(20, 12), max_norm=4.0,
                         norm_type=0.5, seed=11)
    yield embedding_case("own_max_norm_padding_row", 10, 4, [3, 3, 7, 0], padding_idx=3,
                         max_norm=0.5, custom_pad_row=True, seed=12, scale=2.0)
    yield embedding_case("own_scale_grad_by_freq", 7, 4, [1, 1, 1, 2, 6, 2, 0], 
                         scale_grad_by_freq=True, seed=13)
    yield embedding_case("own_scale_grad_by_freq_padding", 7, 4, [[1, 3, 3], [3, 1, 5]],
                         padding_idx=3, scale_grad_by_freq=True, seed=14)
    yield embedding_case("own_sparse_2d", 30, 5, rnd(30, 4, 6), sparse=True, seed=15)
    yield embedding_case("own_sparse_padding", 30, 5, [4, 9, 4, 4, 2, 9], padding_idx=4,
                         sparse=True, seed=16)
    yield embedding_case("own_sparse_all_padding", 10, 3, [2, 2, 2], padding_idx=2,
                         sparse=True, seed=17)
    yield embedding_case("own_sparse_scale_grad_by_freq_padding", 12, 4, [5, 5, 0, 7, 5, 0, 7],
                         padding_idx=0, scale_grad_by_freq=True, sparse=True, seed=18)
    yield embedding_case("own_all_options_inf_norm", 25, 6, rnd(25, 3, 7), padding_idx=-3,
                         max_norm=1.1, norm_type=float("inf"), scale_grad_by_freq=True,
                         sparse=True, seed=19, scale=2.0)
    yield embedding_case("own_many_repeats", 5, 2, [3] * 500 + [1] * 300 + [0] * 200,
                         padding_idx=0, scale_grad_by_freq=True, seed=20)
    yield embedding_case("own_large_random", 600, 16, rnd(600, 16, 24), seed=21)
    cfg = {"num_embeddings": 8, "embedding_dim": 2}
    yield error_case("own_err_index_equal_to_num_embeddings", "embedding", cfg,
                     "index_out_of_range", [0, 8])
    yield error_case("own_err_index_very_negative", "embedding", cfg, "index_out_of_range",
                     [3, -100, 2])
    yield error_case("own_err_padding_idx_equal_to_num_embeddings", "config",
                     dict(cfg, padding_idx=8), "padding_idx_out_of_range")
    yield error_case("own_err_padding_idx_below_minus_n", "config", dict(cfg, padding_idx=-9),
                     "padding_idx_out_of_range")


class RowwiseAdagrad(torch.optim.Optimizer):
    """FBGEMM's EXACT_ROWWISE_ADAGRAD on a sparse gradient, from its formula: one accumulator
    per row; with g = grad + weight_decay * w[row] (L2), sum[row] += mean(g^2) and
    w[row] -= lr * g / (sqrt(sum[row]) + eps)."""

    def __init__(self, params, lr, eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()
                ids, g = grad.indices()[0], grad.values()
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.zeros(p.shape[0], dtype=p.dtype)
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p[ids]
                state["sum"][ids] += (g * g).mean(dim=1)
                p[ids] -= group["lr"] * g / (state["sum"][ids].sqrt() + group["eps"]).unsqueeze(1)


def optimizer_case(name, V, D, optimizer, steps, padding_idx=None, scale_grad_by_freq=False,
                   seed=0, max_norm=None, norm_type=2.0):
    """nn.Embedding(sparse=True) trained for len(steps) steps; steps are index lists. With
    max_norm, each forward renormalises the rows it reads in place before the step."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.Embedding(V, D, padding_idx=padding_idx, max_norm=max_norm,
                             norm_type=norm_type, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(V, D, generator=g))
        if padding_idx is not None:
            emb.weight[padding_idx] = 0.0
    weight = emb.weight.detach().clone()
    params = {k: v for k, v in optimizer.items() if k != "name"}
    opt = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
           "sparse_adam": torch.optim.SparseAdam,
           "rowwise_adagrad": RowwiseAdagrad}[optimizer["name"]](emb.parameters(), **params)
    out_steps = []
    for indices in steps:
        indices = torch.tensor(indices)
        grad_output = torch.randn(*indices.shape, D, generator=g)
        opt.zero_grad()
        (emb(indices) * grad_output).sum().backward()
        opt.step()
        out_steps.append({"indices": t(indices), "grad_output": t(grad_output),
                          "weight_after": t(emb.weight.detach())})
    return {
        "format": "embedding-golden/1", "kind": "optimizer", "name": name,
        "source": f"torch {torch.__version__} nn.Embedding(sparse=True) + optim, CPU float32 (xtask/golden.py)",
        "config": {"num_embeddings": V, "embedding_dim": D, "padding_idx": padding_idx,
                   "max_norm": max_norm, "norm_type": norm_type,
                   "scale_grad_by_freq": scale_grad_by_freq, "sparse": True},
        "optimizer": optimizer, "weight": t(weight), "steps": out_steps,
    }


def optimizer_cases():
    steps = [[1, 4, 4, 9], [4, 2, 2, 2, 17], [0, 9, 11], [3, 4, 5, 6, 7, 8]]
    yield optimizer_case("own_sgd_repeats", 20, 3, {"name": "sgd", "lr": 0.3}, steps, seed=1)
    yield optimizer_case("own_sgd_padding", 20, 3, {"name": "sgd", "lr": 0.3}, steps,
                         padding_idx=4, seed=2)
    yield optimizer_case("own_adagrad_options", 20, 3,
                         {"name": "adagrad", "lr": 0.2, "lr_decay": 0.1,
                          "initial_accumulator_value": 0.5, "eps": 1e-6}, steps, seed=3)
    yield optimizer_case("own_adagrad_padding", 20, 3, {"name": "adagrad", "lr": 0.1}, steps,
                         padding_idx=2, seed=4)
    yield optimizer_case("own_sparse_adam_betas", 20, 3,
                         {"name": "sparse_adam", "lr": 0.05, "betas": [0.7, 0.9], "eps": 1e-4},
                         steps, seed=5)
    yield optimizer_case("own_sparse_adam_rows_skip_steps", 20, 3,
                         {"name": "sparse_adam", "lr": 0.02}, steps + [[1, 1], [19]], seed=6)
    # max_norm: PyTorch's forward renormalises the rows it reads in place, and the step then
    # updates the renormalised rows (a Learner's forward, taking &self, cannot: the step does).
    yield optimizer_case("own_sgd_max_norm", 20, 3, {"name": "sgd", "lr": 0.3}, steps,
                         max_norm=1.0, seed=7)
    yield optimizer_case("own_sgd_max_norm_padding", 20, 3, {"name": "sgd", "lr": 0.3}, steps,
                         padding_idx=4, max_norm=0.8, seed=8)
    yield optimizer_case("own_adagrad_max_norm_p1", 20, 3, {"name": "adagrad", "lr": 0.2}, steps,
                         max_norm=1.5, norm_type=1.0, seed=9)
    yield optimizer_case("own_sparse_adam_max_norm_inf", 20, 3, {"name": "sparse_adam", "lr": 0.05},
                         steps, max_norm=0.9, norm_type=float("inf"), seed=10)
    # Row-wise Adagrad (FBGEMM's EXACT_ROWWISE_ADAGRAD) has no PyTorch optimizer: these cases
    # apply its formula (RowwiseAdagrad above) to PyTorch's sparse gradients.
    yield optimizer_case("own_rowwise_adagrad", 20, 3, {"name": "rowwise_adagrad", "lr": 0.2},
                         steps + [[1, 1], [19]], seed=11)
    yield optimizer_case("own_rowwise_adagrad_decay_padding", 20, 5,
                         {"name": "rowwise_adagrad", "lr": 0.1, "eps": 1e-4, "weight_decay": 0.3},
                         steps, padding_idx=4, seed=12)
    yield optimizer_case("own_rowwise_adagrad_decay_max_norm", 20, 3,
                         {"name": "rowwise_adagrad", "lr": 0.3, "weight_decay": 0.2},
                         steps, max_norm=1.0, seed=13)


HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def few_bits(x, dtype):
    """Values of few significant bits, so that any sum of a batch's rows is exact in `dtype`
    (f16 holds integers exactly up to 2048, bf16 up to 256): the expected gradient then does
    not depend on the order in which a backend sums a row's tokens."""
    step = 8.0 if dtype == torch.float16 else 4.0
    return ((x * step).round() / step).clamp(-4.0, 4.0)


def half_embedding_case(name, dtype, V, D, indices, padding_idx=None, max_norm=None,
                        norm_type=2.0, sparse=False, seed=0):
    """F.embedding on a `dtype` table: the forward, the in-place renorm and the gradient,
    all computed by PyTorch in `dtype`."""
    dt = HALF[dtype]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g).to(dt)
    pad = None if padding_idx is None else (padding_idx + V if padding_idx < 0 else padding_idx)
    if pad is not None:
        weight[pad] = 0.0
    indices = torch.tensor(indices, dtype=torch.long)
    grad_output = few_bits(torch.randn(*indices.shape, D, generator=g), dt).to(dt)
    w_work = weight.clone().requires_grad_(True)
    out = F.embedding(indices, w_work, padding_idx=padding_idx, max_norm=max_norm,
                      norm_type=norm_type, sparse=False)
    (out * grad_output).sum().backward()
    expected = {
        "output": t(out.detach().float()),
        "weight_after_forward": t(w_work.detach().float()),
        "weight_grad": t(w_work.grad.float()),
    }
    if sparse:
        ids = torch.unique(indices.reshape(-1))
        if pad is not None:
            ids = ids[ids != pad]
        expected["weight_grad_rows"] = {"ids": t(ids), "values": t(w_work.grad[ids].float())}
    return {
        "format": "embedding-golden/1", "kind": "embedding", "name": name, "dtype": dtype,
        "source": f"torch {torch.__version__} F.embedding, CPU {dtype} (xtask/golden.py)",
        "config": {"num_embeddings": V, "embedding_dim": D, "padding_idx": padding_idx,
                   "max_norm": max_norm, "norm_type": norm_type,
                   "scale_grad_by_freq": False, "sparse": sparse},
        "weight": t(weight.float()), "indices": t(indices), "grad_output": t(grad_output.float()),
        "expected": expected,
    }


def half_optimizer_case(name, dtype, V, D, optimizer, steps, padding_idx=None, seed=0):
    """A `dtype` table trained by a sparse rule that computes in float32, FBGEMM's way: each
    step reads the stored `dtype` rows as float32, updates them with float32 state, and writes
    them back rounded to the nearest `dtype` value. PyTorch's optimizer runs on a float32 copy
    of the table, refreshed from the `dtype` table before each step; the gradient is PyTorch's
    sparse gradient of the `dtype` lookup."""
    dt = HALF[dtype]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g).to(dt)
    if padding_idx is not None:
        weight[padding_idx] = 0.0
    initial = weight.clone()
    master = torch.nn.Parameter(weight.float())
    params = {k: v for k, v in optimizer.items() if k != "name"}
    opt = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
           "sparse_adam": torch.optim.SparseAdam,
           "rowwise_adagrad": RowwiseAdagrad}[optimizer["name"]]([master], **params)
    out_steps = []
    for indices in steps:
        indices = torch.tensor(indices)
        grad_output = few_bits(torch.randn(*indices.shape, D, generator=g), dt).to(dt)
        w = weight.clone().requires_grad_(True)
        out = F.embedding(indices, w, padding_idx=padding_idx, sparse=True)
        (out * grad_output).sum().backward()
        with torch.no_grad():
            master.copy_(weight.float())
        master.grad = w.grad.coalesce().float()
        opt.step()
        weight = master.detach().to(dt)
        out_steps.append({"indices": t(indices), "grad_output": t(grad_output.float()),
                          "weight_after": t(weight.float())})
    return {
        "format": "embedding-golden/1", "kind": "optimizer", "name": name, "dtype": dtype,
        "source": f"torch {torch.__version__} F.embedding(sparse=True) in {dtype}, optim on a "
                  "float32 copy, rounded to nearest (xtask/golden.py)",
        "config": {"num_embeddings": V, "embedding_dim": D, "padding_idx": padding_idx,
                   "max_norm": None, "norm_type": 2.0, "scale_grad_by_freq": False,
                   "sparse": True},
        "optimizer": optimizer, "weight": t(initial.float()), "steps": out_steps,
    }


def half_cases():
    steps = [[1, 4, 4, 9], [4, 2, 2, 2, 17], [0, 9, 11, 4]]
    for dtype in HALF:
        short = "f16" if dtype == "float16" else "bf16"
        yield half_embedding_case(f"own_{short}_plain_2d", dtype, 10, 4, [[1, 2, 4, 5], [4, 3, 2, 9]],
                                  seed=31)
        yield half_embedding_case(f"own_{short}_sparse_padding", dtype, 12, 5,
                                  [[1, 2, 2, 7], [7, 0, 2, 11]], padding_idx=2, sparse=True,
                                  seed=32)
        yield half_embedding_case(f"own_{short}_max_norm", dtype, 10, 4, [[1, 3, 3], [7, 3, 1]],
                                  max_norm=1.0, seed=33)
        yield half_optimizer_case(f"own_{short}_sgd", dtype, 20, 4, {"name": "sgd", "lr": 0.3},
                                  steps, seed=34)
        yield half_optimizer_case(f"own_{short}_adagrad", dtype, 20, 4,
                                  {"name": "adagrad", "lr": 0.2, "initial_accumulator_value": 0.1},
                                  steps, padding_idx=2, seed=35)
        yield half_optimizer_case(f"own_{short}_rowwise_adagrad", dtype, 20, 4,
                                  {"name": "rowwise_adagrad", "lr": 0.2, "weight_decay": 0.1},
                                  steps, seed=36)
        yield half_optimizer_case(f"own_{short}_sparse_adam", dtype, 20, 4,
                                  {"name": "sparse_adam", "lr": 0.05}, steps, seed=37)


def bag_case(name, V, D, indices, offsets=None, mode="mean", padding_idx=None, max_norm=None,
             scale_grad_by_freq=False, sparse=False, include_last_offset=False, psw=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g) * (2.0 if max_norm else 1.0)
    if padding_idx is not None:
        weight[padding_idx] = 0.0
    indices = torch.tensor(indices)
    offs = None if offsets is None else torch.tensor(offsets)
    w = weight.clone().requires_grad_(True)
    p = None if psw is None else torch.tensor(psw, dtype=torch.float32).requires_grad_(True)
    # Dense gradients: PyTorch refuses some sparse combinations that this project supports,
    # and the dense result defines the intended rows.
    out = F.embedding_bag(indices, w, offs, max_norm=max_norm, scale_grad_by_freq=scale_grad_by_freq,
                          mode=mode, sparse=False, per_sample_weights=p,
                          include_last_offset=include_last_offset, padding_idx=padding_idx)
    grad_output = torch.randn(*out.shape, generator=g)
    (out * grad_output).sum().backward()
    return {
        "format": "embedding-golden/1", "kind": "embedding_bag", "name": name,
        "source": f"torch {torch.__version__} F.embedding_bag, CPU float32 (xtask/golden.py)",
        "config": {"num_embeddings": V, "embedding_dim": D, "mode": mode, "padding_idx": padding_idx,
                   "max_norm": max_norm, "norm_type": 2.0, "scale_grad_by_freq": scale_grad_by_freq,
                   "sparse": sparse, "include_last_offset": include_last_offset},
        "weight": t(weight), "indices": t(indices),
        "offsets": None if offs is None else t(offs),
        "per_sample_weights": None if p is None else t(p.detach()),
        "grad_output": t(grad_output),
        "expected": {"output": t(out.detach()), "weight_after_forward": t(w.detach()),
                     "weight_grad": t(w.grad),
                     "per_sample_weights_grad": None if p is None else t(p.grad)},
    }


def bag_error(name, config, expect, op="embedding_bag", indices=None, offsets=None, psw=None):
    case = {"format": "embedding-golden/1", "kind": "error", "name": name, "op": op,
            "config": config, "expect_error": expect,
            "source": f"torch {torch.__version__} raises for this input (xtask/golden.py)"}
    for key, value in (("indices", indices), ("offsets", offsets), ("per_sample_weights", psw)):
        if value is not None:
            case[key] = {"shape": [len(value)], "data": value}
    try:
        bag = torch.nn.EmbeddingBag(config["num_embeddings"], config["embedding_dim"],
                                    mode=config.get("mode", "mean"),
                                    scale_grad_by_freq=config.get("scale_grad_by_freq", False))
        if indices is not None:
            bag(torch.tensor(indices), torch.tensor(offsets),
                None if psw is None else torch.tensor(psw, dtype=torch.float32))
    except (AssertionError, IndexError, RuntimeError, ValueError, NotImplementedError):
        return case
    raise SystemExit(f"{name}: PyTorch accepted the input")


def bag_cases():
    # PyTorch's own example from test_embedding.py (_test_EmbeddingBag).
    for mode in ("sum", "mean", "max"):
        yield bag_case(f"own_bag_{mode}_pytorch_example", 5, 2, [3, 1, 1, 1, 4, 0],
                       [0, 0, 3, 3, 6], mode=mode, seed=1)
    yield bag_case("own_bag_max_padding_and_empty", 8, 3, [2, 2, 5, 1, 2, 7], [0, 2, 2, 5],
                   mode="max", padding_idx=2, seed=2)
    yield bag_case("own_bag_max_ties_first", 4, 2, [1, 1, 3], [0], mode="max", seed=3)
    yield bag_case("own_bag_max_sparse", 12, 3, [4, 9, 4, 0, 11], [0, 3], mode="max",
                   sparse=True, seed=4)
    yield bag_case("own_bag_sum_psw_padding", 9, 3, [0, 4, 0, 8, 4], [0, 2], mode="sum",
                   padding_idx=0, psw=[0.5, -1.0, 2.0, 3.0, 0.25], seed=5)
    yield bag_case("own_bag_mean_all_padding_bag", 9, 3, [3, 3, 1, 3, 6], [0, 2], mode="mean",
                   padding_idx=3, seed=6)
    yield bag_case("own_bag_last_offset_trailing_tokens", 9, 3, [1, 2, 3, 4, 5, 6], [0, 2, 4],
                   mode="sum", include_last_offset=True, seed=7)
    # Every id occurs twice: PyTorch 2.9's embedding_bag divides some rows by the count of
    # another id when the counts differ (see the project notes), which this case avoids.
    yield bag_case("own_bag_mean_freq_sparse", 15, 4, [1, 1, 5, 5, 9, 9, 2, 2], [0, 3],
                   mode="mean", scale_grad_by_freq=True, sparse=True, seed=8)
    yield bag_case("own_bag_sum_2d_psw", 10, 3, [[1, 2, 3], [3, 3, 0]], mode="sum",
                   psw=[[1.0, 0.5, -2.0], [0.1, 0.2, 0.3]], seed=9)
    yield bag_case("own_bag_max_2d_max_norm", 10, 3, [[1, 2, 3], [3, 7, 0]], mode="max",
                   max_norm=1.5, seed=10)
    cfg = {"num_embeddings": 10, "embedding_dim": 3, "mode": "sum"}
    yield bag_error("own_err_bag_index_out_of_range", cfg, "index_out_of_range", indices=[1, 10],
                    offsets=[0])
    yield bag_error("own_err_bag_psw_max", dict(cfg, mode="max"), "per_sample_weights_mode",
                    indices=[1, 2], offsets=[0], psw=[1.0, 1.0])
    yield bag_error("own_err_bag_offsets_negative_start", cfg, "invalid_offsets", indices=[1, 2],
                    offsets=[-1, 1])


def vectors_cases(out_dir):
    """Word-vector files written by gensim's KeyedVectors.save_word2vec_format (text and binary),
    with the vectors and the cosine similarities gensim computes on them."""
    import numpy as np
    from gensim.models import KeyedVectors
    out = os.path.join(out_dir, "vectors")
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(30)
    for name, count, dim in [("gensim_small", 12, 5), ("gensim_dim64", 40, 64)]:
        words = ["the", "of", "and", "königin", "don't", "x1"] + [f"w{i}" for i in range(count - 6)]
        vectors = torch.randn(count, dim, generator=g).numpy().astype(np.float32)
        kv = KeyedVectors(vector_size=dim)
        kv.add_vectors(words, vectors)
        files = {"text": name + ".txt", "binary": name + ".bin"}
        kv.save_word2vec_format(os.path.join(out, files["text"]), binary=False)
        kv.save_word2vec_format(os.path.join(out, files["binary"]), binary=True)
        pairs = [(0, 1), (2, 3), (4, 5), (0, count - 1)]
        yield {
            "format": "embedding-golden/1", "kind": "vectors", "name": name,
            "source": f"gensim {__import__('gensim').__version__} KeyedVectors.save_word2vec_format (xtask/golden.py)",
            "files": files, "words": words, "vectors": t(torch.from_numpy(vectors)),
            "similarities": [[a, b, float(kv.similarity(words[a], words[b]))] for a, b in pairs],
        }


def write_safetensors(path, tensors):
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian
    data), so that the venv needs no other package."""
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def checkpoint_cases(out_dir):
    """State_dicts of an nn.Embedding and an nn.EmbeddingBag under model keys, as torch.save and
    as safetensors, with the float32 values each tensor holds: in float32 (`tables`, also loaded
    as a whole model), and in bfloat16 and float16 (`tables_half`)."""
    out = os.path.join(out_dir, "checkpoint")
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(40)
    for name, dtypes in [("tables", (torch.float32, torch.float32)),
                         ("tables_half", (torch.bfloat16, torch.float16))]:
        model = torch.nn.ModuleDict({
            "encoder": torch.nn.Embedding(7, 3, padding_idx=0),
            "pooled": torch.nn.EmbeddingBag(5, 4, mode="sum"),
        })
        with torch.no_grad():
            model["encoder"].weight.copy_(torch.randn(7, 3, generator=g))
            model["pooled"].weight.copy_(torch.randn(5, 4, generator=g))
        model["encoder"].to(dtypes[0])
        model["pooled"].to(dtypes[1])
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        files = {"pytorch": name + ".pt", "safetensors": name + ".safetensors"}
        torch.save(state, os.path.join(out, files["pytorch"]))
        write_safetensors(os.path.join(out, files["safetensors"]), state)
        yield {
            "format": "embedding-golden/1", "kind": "checkpoint", "name": name,
            "source": f"torch {torch.__version__} torch.save of a state_dict, safetensors by hand (xtask/golden.py)",
            "files": files, "whole_model": dtypes == (torch.float32, torch.float32),
            "tensors": {k: t(v.float()) for k, v in state.items()},
            "dtypes": {k: str(v.dtype) for k, v in state.items()},
        }


def write(out_dir, capability, cases):
    out = os.path.join(out_dir, capability)
    os.makedirs(out, exist_ok=True)
    n = 0
    for case in cases:
        with open(os.path.join(out, case["name"] + ".json"), "w") as f:
            json.dump(case, f, allow_nan=True)
            f.write("\n")
        n += 1
    print(f"wrote {n} cases to {out}")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/golden"
    write(out_dir, "embedding", cases())
    write(out_dir, "optimizer", optimizer_cases())
    write(out_dir, "bag", bag_cases())
    write(out_dir, "half", half_cases())
    write(out_dir, "vectors", vectors_cases(out_dir))
    write(out_dir, "checkpoint", checkpoint_cases(out_dir))


if __name__ == "__main__":
    main()
