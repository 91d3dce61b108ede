"""kiln.fx_translate and the torch.compile backend: FX graphs -> ONNX -> kiln.

On torch 1.13 (Debian 12) the GraphModules come from torch.fx.symbolic_trace
in both styles the backend meets: call_module nodes with the weights in the
modules, and functional graphs whose parameters are placeholders (what
dynamo >= 2.5 hands a backend). The torch.compile tests need torch >= 2."""

import json
import math
import os
import pathlib
import shutil
import subprocess
import warnings

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kiln  # noqa: E402
import kiln.torch  # noqa: E402
from conftest import assert_close  # noqa: E402
from kiln import fx_translate  # noqa: E402

# A graph that falls back to eager torch warns (RuntimeWarning): an error in
# every test but those that expect it (pytest.warns).
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

TORCH_2 = int(torch.__version__.split(".")[0]) >= 2
needs_torch_2 = pytest.mark.skipif(not TORCH_2, reason="torch.compile and torch.export need torch >= 2.0")


def eager(fn, *args):
    with torch.no_grad():
        return fn(*args)


def fx_module(gm, example_inputs, settings, **kw):
    return kiln.torch.FxModule(gm, example_inputs, **kw, **settings)


# ---- Models ---------------------------------------------------------------------


def small_cnn(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, 4))
    with torch.no_grad():  # running stats other than 0/1, so a dropped BatchNorm shows
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def functional_cnn(x, conv_w, conv_b, bn_w, bn_b, L_self_buffers_running_mean_, L_self_buffers_running_var_,
                   fc_w, fc_b):
    """dynamo's style: the weights are graph inputs, the buffers named as
    dynamo names lifted buffers."""
    y = F.conv2d(x, conv_w, conv_b, padding=1)
    y = F.batch_norm(y, L_self_buffers_running_mean_, L_self_buffers_running_var_, bn_w, bn_b, False, 0.1, 1e-5)
    y = F.relu(y)
    y = y + torch.sigmoid(y) * 0.5
    y = F.max_pool2d(y, 2)
    y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
    return F.linear(y, fc_w, fc_b)


def functional_cnn_params(seed=0):
    torch.manual_seed(seed)
    p = nn.Parameter
    return [p(torch.randn(8, 3, 3, 3) * 0.3), p(torch.randn(8) * 0.1), p(torch.rand(8) + 0.5), p(torch.randn(8) * 0.1),
            torch.randn(8) * 0.2, torch.rand(8) + 0.5, p(torch.randn(4, 8) * 0.3), p(torch.randn(4) * 0.1)]


class Attention(nn.Module):
    """Hand-built multi-head self-attention: view, transpose, matmul, softmax."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, length, dim = x.size(0), x.size(1), x.shape[2]
        head = dim // self.heads
        qkv = self.qkv(x).view(batch, length, 3, self.heads, head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) / (head ** 0.5)
        attn = F.softmax(scores, dim=-1)
        out = (attn @ v).transpose(1, 2).contiguous().reshape(batch, length, dim)
        return self.proj(out)


class TransformerBlock(nn.Module):
    def __init__(self, dim=32, heads=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.fc2(self.act(self.fc1(self.norm2(x)))))


# ---- What the compiled graph holds ----------------------------------------------------


def kiln_cli():
    """The CLI next to the library under test: in its build tree, else the
    one on PATH (an installed or packed kiln)."""
    library = os.environ.get("KILN_LIBRARY")
    build = pathlib.Path(library).resolve().parent.parent if library else \
        pathlib.Path(__file__).resolve().parents[2] / "build"
    cli = build / "tools" / "kiln" / "kiln"
    if cli.exists():
        return cli
    found = shutil.which("kiln")
    return pathlib.Path(found) if found else None


def profile_kinds(onnx_bytes, tmp_path):
    """{layer op: kind} from `kiln run --profile --json` on the model."""
    cli = kiln_cli()
    if cli is None:
        pytest.skip("the kiln CLI is not built")
    path = tmp_path / "graph.onnx"
    path.write_bytes(onnx_bytes)
    out = subprocess.run([str(cli), "run", str(path), "--profile", "--profile-runs", "1", "--json",
                          "--optimization-level", "0", "--timing-cache", "-", "--cache-dir", str(tmp_path / "cli")],
                         check=True, capture_output=True, text=True).stdout
    return [(layer["op"], layer["kind"]) for layer in json.loads(out)["profile"]["layers"]]


def test_call_module_graph_matches_eager_and_its_weights_are_initializers(fast, tmp_path):
    net = small_cnn()
    gm = torch.fx.symbolic_trace(net)
    assert any(n.op == "call_module" for n in gm.graph.nodes)
    x = torch.rand(2, 3, 16, 16)
    t = fx_translate.translate(gm, [x])
    assert [i for i, _ in t.inputs] == [0]
    assert {p.name for p in t.builder.params} >= {"0.weight", "1.running_mean", "1.running_var", "9.weight"}
    kinds = profile_kinds(t.onnx_bytes([x]), tmp_path)
    convs = [kind for op, kind in kinds if op.startswith("Conv")]
    assert len(convs) == 2 and set(convs) == {"onednn"}, kinds
    model = fx_module(gm, [x], fast)
    assert_close(model(x).numpy(), eager(net, x).numpy())


def test_functional_graph_with_parameter_placeholders(fast, tmp_path):
    gm = torch.fx.symbolic_trace(functional_cnn)
    params = functional_cnn_params()
    x = torch.rand(2, 3, 16, 16)
    args = [x] + params
    assert fx_translate.parameter_placeholders(gm, args) == set(range(1, 9))  # Parameters and named buffers
    t = fx_translate.translate(gm, args)
    assert t.input_indices == [0]
    assert len(t.builder.params) == 8
    kinds = profile_kinds(t.onnx_bytes(args), tmp_path)
    assert [kind for op, kind in kinds if op.startswith("Conv")] == ["onednn"], kinds
    model = fx_module(gm, args, fast)
    assert_close(model(*args).numpy(), eager(functional_cnn, *args).numpy())


def test_torchvision_resnet18(fast):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()  # random weights, nothing downloaded
    gm = torch.fx.symbolic_trace(net)
    x = torch.rand(2, 3, 64, 64)
    model = fx_module(gm, [x], fast)
    assert_close(model(x).numpy(), eager(net, x).numpy())
    assert [e["status"] for e in model.engines()] == ["miss"]  # one engine: every node on the cpu backend


def test_transformer_block(fast):
    net = TransformerBlock().eval()
    gm = torch.fx.symbolic_trace(net)
    x = torch.randn(2, 10, 32)
    model = fx_module(gm, [x], fast)
    assert_close(model(x).numpy(), eager(net, x).numpy())


class MHABlock(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        torch.manual_seed(3)
        self.mha = nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=batch_first)
        self.norm = nn.LayerNorm(32)

    def forward(self, x, mask):
        result = self.mha(x, x, x, attn_mask=mask)  # symbolic_trace cannot unpack a call's tuple
        out, weights = result[0], result[1]
        return self.norm(x + out), weights


@pytest.mark.parametrize("batch_first", [False, True])
def test_nn_multihead_attention(batch_first, fast):
    net = MHABlock(batch_first).eval()
    gm = torch.fx.symbolic_trace(net)
    assert any(n.op == "call_module" and n.target == "mha" for n in gm.graph.nodes)
    x = torch.randn(2, 6, 32) if batch_first else torch.randn(6, 2, 32)
    mask = torch.triu(torch.full((6, 6), float("-inf")), diagonal=1)  # causal
    out, weights = fx_module(gm, [x, mask], fast)(x, mask)
    expected_out, expected_weights = eager(net, x, mask)
    assert_close(out.numpy(), expected_out.numpy())
    assert_close(weights.numpy(), expected_weights.numpy())


def attention_masks(batch, length, source):
    """(attn_mask, key_padding_mask) pairs in the forms a model passes:
    boolean (True keeps a key out), float (added), either alone, both."""
    torch.manual_seed(4)
    causal_bool = torch.triu(torch.ones(length, source, dtype=torch.bool), diagonal=1)
    causal_float = torch.zeros(length, source).masked_fill(causal_bool, float("-inf"))
    pad_bool = torch.zeros(batch, source, dtype=torch.bool)
    pad_bool[0, -2:] = True  # the first sequence is two keys shorter
    # 0 or -inf only: torch's own fast path (batch_first, no grad) reads a
    # float padding mask as boolean, the slow path adds it.
    pad_float = torch.zeros(batch, source)
    pad_float[-1, -3:] = float("-inf")
    # (A boolean attn_mask with a float key_padding_mask is deprecated and
    # differs between torch versions: torch 1.13 ORs them.)
    return {"pad_bool": (None, pad_bool), "pad_float": (None, pad_float), "attn_bool+pad_bool": (causal_bool, pad_bool),
            "attn_float+pad_bool": (causal_float, pad_bool)}


MASK_CASES = list(attention_masks(2, 6, 6))


class MaskedMHA(nn.Module):
    """nn.MultiheadAttention with a key_padding_mask, and an attn_mask unless
    ``with_attn_mask`` is off (then the argument is ignored)."""

    def __init__(self, batch_first, with_attn_mask=True):
        super().__init__()
        torch.manual_seed(5)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=batch_first)
        self.with_attn_mask = with_attn_mask

    def forward(self, x, attn_mask, key_padding_mask):
        result = self.mha(x, x, x, key_padding_mask=key_padding_mask,
                          attn_mask=attn_mask if self.with_attn_mask else None)
        return result[0], result[1]


@pytest.mark.parametrize("name", MASK_CASES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_nn_multihead_attention_with_key_padding_mask(batch_first, name, fast):
    attn_mask, pad = attention_masks(2, 6, 6)[name]
    net = MaskedMHA(batch_first, attn_mask is not None).eval()
    gm = torch.fx.symbolic_trace(net)
    torch.manual_seed(10)
    x = torch.randn(2, 6, 32) if batch_first else torch.randn(6, 2, 32)
    args = [x, attn_mask if attn_mask is not None else torch.zeros(1), pad]
    out, weights = fx_module(gm, args, fast)(*args)
    expected_out, expected_weights = eager(net, *args)
    assert_close(out.numpy(), expected_out.numpy())
    assert_close(weights.numpy(), expected_weights.numpy())
    assert not torch.isnan(expected_out).any()


def mha_functional(x, mask, pad, in_w, in_b, out_w, out_b):
    """F.multi_head_attention_forward as a call_function node, the weights graph inputs."""
    return F.multi_head_attention_forward(x, x, x, 32, 4, in_w, in_b, None, None, False, 0.0, out_w, out_b,
                                          training=False, key_padding_mask=pad, attn_mask=mask)[0]


def test_functional_multi_head_attention_with_masks(fast):
    gm = torch.fx.symbolic_trace(mha_functional)
    assert any(n.op == "call_function" and n.target is F.multi_head_attention_forward for n in gm.graph.nodes)
    ref = MaskedMHA(False).mha
    params = [ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight, ref.out_proj.bias]
    x = torch.randn(6, 2, 32)
    mask, pad = attention_masks(2, 6, 6)["attn_float+pad_bool"]
    args = [x, mask, pad] + params
    got = fx_module(gm, args, fast)(*args)
    assert_close(got.numpy(), eager(mha_functional, *args).numpy())


def mha_as_dynamo_inlines(need_weights, pad_is_bool, attn_is_bool):
    """nn.MultiheadAttention's forward (embed 32, 4 heads) as dynamo (torch >= 2)
    inlines it into the graph a backend gets: _canonical_mask turns a boolean
    mask into a float one by zeros_like + masked_fill_, the padding mask is
    expanded per head and added, then baddbmm (need_weights) or
    scaled_dot_product_attention. (The flags stand for the dtype checks dynamo
    resolves while tracing.)"""
    return lambda *args: _mha_inlined(*args, need_weights=need_weights, pad_is_bool=pad_is_bool,
                                      attn_is_bool=attn_is_bool)


def _mha_inlined(x, attn_mask, key_padding_mask, in_w, in_b, out_w, out_b, need_weights, pad_is_bool,
                 attn_is_bool):
    heads, embed, head = 4, 32, 8
    length, batch = x.size(0), x.size(1)
    if pad_is_bool:
        key_padding_mask = torch.zeros_like(key_padding_mask, dtype=torch.float32).masked_fill_(key_padding_mask,
                                                                                           float("-inf"))
    if attn_is_bool:
        attn_mask = torch.zeros_like(attn_mask, dtype=torch.float32).masked_fill_(attn_mask, float("-inf"))
    proj = F.linear(x, in_w, in_b)
    proj = proj.unflatten(-1, (3, embed)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    q, k, v = proj[0], proj[1], proj[2]
    attn_mask = attn_mask.unsqueeze(0)
    q = q.view(length, batch * heads, head).transpose(0, 1)
    k = k.view(k.shape[0], batch * heads, head).transpose(0, 1)
    v = v.view(v.shape[0], batch * heads, head).transpose(0, 1)
    source = k.size(1)
    key_padding_mask = key_padding_mask.view(batch, 1, 1, source).expand(-1, heads, -1, -1).reshape(
        batch * heads, 1, source)
    attn_mask = attn_mask + key_padding_mask
    if need_weights:
        q_scaled = q * math.sqrt(1.0 / float(head))
        weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
        weights = F.softmax(weights, dim=-1)
        out = torch.bmm(weights, v)
        out = out.transpose(0, 1).contiguous().view(length * batch, embed)
        out = F.linear(out, out_w, out_b)
        return out.view(length, batch, out.size(1)), weights.view(batch, heads, length, source).mean(dim=1)
    attn_mask = attn_mask.view(batch, heads, -1, source)
    q, k, v = (t.view(batch, heads, -1, head) for t in (q, k, v))
    out = sdpa(q, k, v, attn_mask)
    out = out.permute(2, 0, 1, 3).contiguous().view(batch * length, embed)
    return F.linear(out, out_w, out_b).view(length, batch, out.size(1))


def _fx_ops_name(node):
    from kiln import _fx_ops

    return _fx_ops.canonical_name(node) if node.op in ("call_function", "call_method") else node.op


def native_mha(mask_type, need_weights):
    def fn(x, mask, in_w, in_b, out_w, out_b):
        return torch._native_multi_head_attention(x, x, x, 32, 4, in_w, in_b, out_w, out_b, mask, need_weights, True,
                                                  mask_type)

    return fn


NATIVE_MASKS = [(1, "pad_bool"), (1, "pad_float")] + [
    pytest.param(t, n, marks=needs_torch_2)
    for t, n in [(0, "attn_bool"), (0, "attn_float"), (2, "attn_float+pad_bool")]]


@pytest.mark.parametrize("mask_type,name", NATIVE_MASKS)
def test_native_multi_head_attention(mask_type, name, fast):
    """nn.MultiheadAttention's fused fast path (batch_first, eval, no grad), what
    dynamo records for it: torch._native_multi_head_attention with its masks.
    (torch 1.13's kernel takes only key padding masks; attn_mask and merged
    masks, mask types 0 and 2, as torch 2's merge_masks makes them.)"""
    masks = attention_masks(2, 6, 6)
    ref = MaskedMHA(True).mha.eval()
    params = [ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight, ref.out_proj.bias]
    if name.startswith("attn_") and "+" not in name:
        mask = masks["attn_bool+pad_bool" if name == "attn_bool" else "attn_float+pad_bool"][0]
    elif mask_type == 2:  # merged as nn.MultiheadAttention.merge_masks does
        attn, pad = masks[name]
        mask = attn.view(1, 1, 6, 6).expand(2, 4, -1, -1) + torch.zeros(2, 6).masked_fill(pad, float("-inf")).view(
            2, 1, 1, 6).expand(-1, 4, -1, -1)
    else:
        mask = masks[name][1]
    torch.manual_seed(12)
    x = torch.randn(2, 6, 32)
    for need_weights in (True, False):
        fn = native_mha(mask_type, need_weights)
        gm = torch.fx.symbolic_trace(lambda x, mask, in_w, in_b, out_w, out_b: fn(x, mask, in_w, in_b, out_w, out_b))
        assert any(_fx_ops_name(n) == "_native_multi_head_attention" for n in gm.graph.nodes)
        args = [x, mask] + params
        got = fx_module(gm, args, fast)(*args)
        expected = eager(fn, *args)
        assert_close(got[0].numpy(), expected[0].numpy())
        if need_weights:
            assert_close(got[1].numpy(), expected[1].numpy())
        kpm = mask if mask_type == 1 else None
        attn = mask if mask_type in (0, 2) else None
        if mask_type == 2:
            attn = attn.reshape(8, 6, 6)
        if attn is not None and attn.dtype != torch.bool:
            attn = attn != 0
        if kpm is not None and kpm.dtype != torch.bool:
            kpm = kpm != 0
        with torch.no_grad():  # the same attention through the unfused path
            slow = F.multi_head_attention_forward(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 32, 4,
                                                  *params[:2], None, None, False, 0.0, *params[2:], training=False,
                                                  key_padding_mask=kpm, attn_mask=attn)[0].transpose(0, 1)
        assert_close(got[0].numpy(), slow.numpy())


def sdpa_reference(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """F.scaled_dot_product_attention's documented semantics (torch < 2 lacks it):
    a boolean mask's True takes part, a float mask is added."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if is_causal:
        keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else \
            scores + attn_mask
    return torch.softmax(scores, dim=-1) @ v


# The translator reaches its handler by name: a torch.fx.wrap'ed stand-in named
# scaled_dot_product_attention is a call_function node like torch's own.
if TORCH_2:
    sdpa = F.scaled_dot_product_attention
else:
    def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        return sdpa_reference(q, k, v, attn_mask, dropout_p, is_causal, scale)

    torch.fx.wrap("sdpa")  # the global name the modules below call
    sdpa = scaled_dot_product_attention


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("name", MASK_CASES)
def test_multihead_attention_as_dynamo_inlines_it(name, need_weights, fast):
    """The masked-attention graph dynamo hands the backend (zeros_like,
    masked_fill_, expand, baddbmm or SDPA), against eager nn.MultiheadAttention."""
    attn_mask, pad = attention_masks(2, 6, 6)[name]
    ref = MaskedMHA(False, attn_mask is not None).eval()
    graph_mask = attn_mask if attn_mask is not None else torch.zeros(6, 6)  # what _canonical_mask leaves
    params = [ref.mha.in_proj_weight, ref.mha.in_proj_bias, ref.mha.out_proj.weight, ref.mha.out_proj.bias]
    flags = {"need_weights": need_weights, "pad_is_bool": pad.dtype == torch.bool,
             "attn_is_bool": graph_mask.dtype == torch.bool}
    fn = mha_as_dynamo_inlines(**flags)
    gm = torch.fx.symbolic_trace(lambda x, attn_mask, pad, in_w, in_b, out_w, out_b: fn(x, attn_mask, pad, in_w, in_b,
                                                                                     out_w, out_b))
    names = {_fx_ops_name(n) for n in gm.graph.nodes}
    assert ("masked_fill" in names) == (flags["pad_is_bool"] or flags["attn_is_bool"]), names
    assert {"expand", "baddbmm" if need_weights else "scaled_dot_product_attention"} <= names, names
    torch.manual_seed(11)
    x = torch.randn(6, 2, 32)
    args = [x, graph_mask, pad] + params
    got = fx_module(gm, args, fast)(*args)
    expected_out, expected_weights = eager(ref, x, graph_mask, pad)
    if need_weights:
        assert_close(got[0].numpy(), expected_out.numpy())
        assert_close(got[1].numpy(), expected_weights.numpy())
    else:
        assert_close(got.numpy(), expected_out.numpy())


class SDPA(nn.Module):
    def __init__(self, is_causal=False, scale=None):
        super().__init__()
        self.is_causal, self.scale = is_causal, scale

    def forward(self, q, k, v, mask):
        if self.scale is not None:
            return sdpa(q, k, v, attn_mask=mask, is_causal=self.is_causal, scale=self.scale)
        return sdpa(q, k, v, attn_mask=mask, is_causal=self.is_causal)


def sdpa_masks():
    torch.manual_seed(6)
    keep = torch.rand(2, 1, 5, 7) > 0.3
    keep[..., 0] = True  # every query keeps one key: no all -inf row
    float_mask = torch.randn(5, 7).masked_fill(~keep[0, 0], float("-inf"))
    return {"bool_4d": keep, "bool_2d": keep[1, 0], "float_2d": float_mask, "float_4d": torch.randn(2, 3, 5, 7)}


@pytest.mark.parametrize("name", list(sdpa_masks()))
def test_scaled_dot_product_attention_masks(name, fast):
    mask = sdpa_masks()[name]
    torch.manual_seed(7)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    for net in (SDPA(), SDPA(scale=0.2)):
        gm = torch.fx.symbolic_trace(net)
        got = fx_module(gm, [q, k, v, mask], fast)(q, k, v, mask)
        expected = eager(net, q, k, v, mask)
        assert_close(got.numpy(), expected.numpy())
        assert_close(got.numpy(), eager(sdpa_reference, q, k, v, mask, 0.0, False, net.scale).numpy())


class TransposedConvs(nn.Module):
    """Transposed convolutions in every form the backend meets: F.conv_transpose1d/2d,
    torch.convolution(transposed=True) as aten.convolution, nn.ConvTranspose2d
    with output_size; strides, output_padding, groups and dilation."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.w1 = nn.Parameter(torch.randn(4, 3, 3) * 0.3)  # (in, out, k)
        self.w2 = nn.Parameter(torch.randn(4, 3, 3, 2) * 0.3)  # groups=2: (in, out / 2, kh, kw)
        self.b2 = nn.Parameter(torch.randn(6) * 0.1)
        self.up = nn.ConvTranspose2d(4, 5, 3, stride=2, padding=1, dilation=1)
        self.up2 = nn.ConvTranspose2d(4, 4, 2, stride=3, padding=(0, 1), output_padding=(2, 1), groups=4,
                                      dilation=(1, 2), bias=False)

    def forward(self, x):
        a = F.conv_transpose1d(x.flatten(2), self.w1, None, stride=2, padding=1, output_padding=1)
        b = F.conv_transpose2d(x, self.w2, self.b2, stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2,
                               dilation=(2, 1))
        c = torch.convolution(x, self.w2, self.b2, [1, 2], [0, 1], [1, 1], True, [0, 1], 2)
        d = self.up(x, output_size=[10, 8])  # output_padding (1, 1)
        return a, b, c, d, self.up2(x), self.up(x)


def test_transposed_convolutions_match_eager(fast):
    net = TransposedConvs().eval()
    gm = torch.fx.symbolic_trace(net)
    ops = [fx_translate.target_name(n.target) for n in gm.graph.nodes if n.op in ("call_function", "call_module")]
    assert "up" in ops and "up2" in ops and any("convolution" in o for o in ops), ops
    torch.manual_seed(9)
    x = torch.randn(2, 4, 5, 4)
    expected = eager(net, x)
    t = fx_translate.translate(gm, [x])
    assert {"w1", "w2", "up.weight", "up2.weight"} <= {p.name for p in t.builder.params}  # refittable initializers
    got = fx_module(gm, [x], fast)(x)
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    assert tuple(expected[3].shape[2:]) == (10, 8)
    for g, e in zip(got, expected):
        assert_close(g.numpy(), e.numpy())


def test_transposed_convolution_weight_change_is_refit(fast):
    net = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1), nn.ReLU()).eval()
    gm = torch.fx.symbolic_trace(net)
    x = torch.randn(1, 3, 6, 6)
    model = fx_module(gm, [x], fast)
    assert_close(model(x).numpy(), eager(net, x).numpy())
    with torch.no_grad():
        net[0].weight.mul_(-1)
    assert_close(model(x).numpy(), eager(net, x).numpy())
    assert model.recompiles == 0 and model.refits >= 1


# ---- Ops ----------------------------------------------------------------------------


class Ops(nn.Module):
    """Graphs of one family of ops each, parameters from nn.Parameter attributes (get_attr)."""

    def __init__(self, fn):
        super().__init__()
        torch.manual_seed(1)
        self.fn = fn
        self.w1 = nn.Parameter(torch.randn(6, 4, 3) * 0.3)  # conv1d
        self.w2 = nn.Parameter(torch.randn(6, 2, 3, 3) * 0.3)  # grouped conv2d
        self.w3 = nn.Parameter(torch.randn(6, 4, 2, 4) * 0.3)  # even kernels: 'same' pads more at the end
        self.b = nn.Parameter(torch.randn(6) * 0.1)
        self.m = nn.Parameter(torch.randn(5, 7) * 0.3)

    def forward(self, x):
        return self.fn(self, x)


def _convs(s, x):
    a = F.conv1d(x.flatten(2), s.w1, s.b, padding="same", dilation=2)
    b = F.conv1d(x.flatten(2), s.w1, None, padding="valid", stride=2)
    c = F.conv2d(x, s.w2, s.b, padding=(1, 2), dilation=(1, 2), groups=2)
    d = F.conv2d(x, s.w2, s.b, padding="same", groups=2)
    e = F.conv2d(x, s.w3, None, padding="same", dilation=(2, 1))
    return a, b, c, d, e


def _activations(s, x):
    return (F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), torch.sigmoid(x), torch.tanh(x), F.hardswish(x),
            F.hardsigmoid(x), F.leaky_relu(x, 0.2), F.elu(x, 0.7), F.softmax(x, dim=1), F.log_softmax(x, -1),
            x.relu(), F.relu6(x * 8), torch.clamp(x, -0.5, 0.25))


def _pools(s, x):
    return (F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
            F.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(x, (2, 4)), F.adaptive_avg_pool2d(x, (None, 2)),
            x.mean(dim=(2, 3)), torch.mean(x, -1, keepdim=True), x.mean(), x.sum(dim=1))


def _arithmetic(s, x):
    y = x * 2.0 - 1
    y = torch.add(y, x, alpha=0.5)
    z = x.clone()
    z.mul_(3.0)
    z += y
    z.relu_()
    w = torch.sub(1.5, x) / (x.abs() + 1) ** 2
    return y, z, w, torch.div(x, 4), 2 / (x.abs() + 1), -x, torch.rsqrt(x.abs() + 1)


def _layout(s, x):
    n, c, h, w = x.shape[0], x.shape[1], x.size(2), x.size(-1)
    a = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    b = torch.transpose(x, 1, 3).contiguous().view(n, -1)
    c2 = torch.cat([x, x * 2], dim=1).flatten(1, 2)
    d = x[:, 1:3, ::2, -1]
    e = x[..., None, 0]
    f = x.unsqueeze(1).squeeze(1)
    chunks = torch.chunk(x, 4, dim=3)  # 5 in chunks of 2: three chunks, as torch makes them
    parts = x.split([1, 3], dim=1)
    g = x.unflatten(1, (2, 2))
    return (a, b, c2, d, e, f, torch.flatten(x), x.size(1), x.size()[-1], chunks[0], chunks[2], parts[1], g)


def _matmul(s, x):
    a = x.reshape(4, 5, 7)
    b = torch.bmm(a, a.transpose(1, 2))
    c = a @ s.m.t()
    d = torch.addmm(s.m[1, :5], x.reshape(20, 7)[:4], s.m.t(), beta=0.5, alpha=2.0)
    e = F.linear(a, s.m, s.m[0, :5])
    return b, c, d, torch.matmul(a, a.transpose(-1, -2)), e


def _norms(s, x):
    ln = F.layer_norm(x, (7,), s.m[0], s.m[1, :7], 1e-3)
    ln2 = F.layer_norm(x, (5, 7))
    bn = F.batch_norm(x.reshape(4, 5, 7), s.m[1, :5] * 0, s.m[2, :5].abs() + 1, s.m[3, :5], s.m[4, :5], False)
    return ln, ln2, bn, F.dropout(x, 0.3, training=False)


OP_CASES = [(_convs, (2, 4, 6, 6)), (_activations, (2, 3, 5)), (_pools, (2, 3, 8, 8)), (_arithmetic, (2, 3, 4)),
            (_layout, (2, 4, 6, 5)), (_matmul, (20, 7)), (_norms, (4, 5, 7))]


@pytest.mark.parametrize("fn,shape", OP_CASES, ids=[f.__name__.strip("_") for f, _ in OP_CASES])
def test_ops_match_eager(fn, shape, fast):
    net = Ops(fn).eval()
    gm = torch.fx.symbolic_trace(net)
    torch.manual_seed(2)
    x = torch.randn(*shape)
    expected = eager(net, x)
    got = fx_module(gm, [x], fast)(x)
    assert isinstance(got, tuple) and len(got) == len(expected)
    for g, e in zip(got, expected):
        if isinstance(e, torch.Tensor):
            assert isinstance(g, torch.Tensor) and g.dtype == e.dtype
            assert_close(g.numpy(), e.numpy())
        else:
            assert g == e  # sizes come back as Python ints


# ---- Weights change: refit -----------------------------------------------------------


def test_parameters_changed_in_place_or_replaced_are_refit(fast):
    gm = torch.fx.symbolic_trace(functional_cnn)
    params = functional_cnn_params(0)
    x = torch.rand(2, 3, 16, 16)
    cache = kiln.RAMEngineCache()
    model = fx_module(gm, [x] + params, fast, custom_engine_cache=cache)
    first = model(x, *params).clone()
    assert model.refits == 0 and [e["status"] for e in model.engines()] == ["miss"]
    model(x, *params)
    assert model.refits == 0  # same tensors, same versions: no recompile

    with torch.no_grad():
        params[0].mul_(-1.5)  # in place: same storage, new version
        params[4].add_(0.3)  # a buffer too
    compiled = model.last_model
    second = model(x, *params)
    # In place: the same compiled model, no compile (its one engine still the first compile's miss).
    assert model.refits == 1 and model.recompiles == 0 and model.last_model is compiled
    assert [e["status"] for e in model.engines()] == ["miss"]
    assert compiled.report()["last_refit"]["weights"] == 2  # only the two changed tensors
    assert_close(second.numpy(), eager(functional_cnn, x, *params).numpy())
    assert float((second - first).abs().max()) > 1e-3

    other = functional_cnn_params(7)  # other tensors altogether (a new state dict)
    third = model(x, *other)
    assert model.refits == 2 and model.recompiles == 0 and model.last_model is compiled
    assert_close(third.numpy(), eager(functional_cnn, x, *other).numpy())


def test_load_state_dict_into_a_traced_module_is_refit(fast):
    net = small_cnn(0)
    gm = torch.fx.symbolic_trace(net)  # shares net's parameters
    x = torch.rand(2, 3, 16, 16)
    model = fx_module(gm, [x], fast)
    before = model(x).clone()
    net.load_state_dict(small_cnn(5).state_dict())
    after = model(x)
    assert model.refits == 1 and model.recompiles == 0
    assert model.last_model.report()["last_refit"]["engines"] >= 1
    assert_close(after.numpy(), eager(net, x).numpy())
    assert float((after - before).abs().max()) > 1e-3


def test_a_changed_structural_constant_compiles_again(fast):
    """A one-element parameter is a structural constant to kiln (keyed by
    value, never refitted): changing it takes a compile, and the result is
    still right."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)
            self.scale = nn.Parameter(torch.tensor([2.0]))

        def forward(self, x):
            return self.fc(x) * self.scale

    net = Scaled().eval()
    gm = torch.fx.symbolic_trace(net)
    x = torch.rand(3, 6)
    model = fx_module(gm, [x], fast)
    model(x)
    with torch.no_grad():
        net.fc.weight.mul_(2)  # a weight: in place
    assert_close(model(x).numpy(), eager(net, x).numpy())
    assert model.refits == 1 and model.recompiles == 0
    with torch.no_grad():
        net.scale.fill_(-3.0)  # a structural constant: a compile
    assert_close(model(x).numpy(), eager(net, x).numpy())
    assert model.refits == 2 and model.recompiles == 1


# ---- Failures ------------------------------------------------------------------------


def cumsum_graph():
    def f(x, w):
        return torch.cumsum(F.linear(x, w), dim=1)

    return torch.fx.symbolic_trace(f)


def test_an_unknown_op_is_an_error_naming_the_node_and_target():
    gm = cumsum_graph()
    x, w = torch.rand(2, 3), nn.Parameter(torch.rand(4, 3))
    with pytest.raises(fx_translate.FxTranslationError, match=r"FX node 'cumsum' \(call_function .*cumsum\)"):
        fx_translate.translate(gm, [x, w])
    assert isinstance(fx_translate.FxTranslationError("x"), kiln.UnsupportedError)


def test_backend_warns_and_runs_eagerly_on_an_unknown_op(fast):
    gm = cumsum_graph()
    x, w = torch.rand(2, 3), nn.Parameter(torch.rand(4, 3))
    with pytest.warns(RuntimeWarning, match="cumsum"):
        compiled = kiln.torch.dynamo_backend(gm, [x, w], options=fast)
    assert compiled == gm.forward
    assert_close(eager(compiled, x, w).numpy(), eager(gm, x, w).numpy())


def test_a_graph_that_fails_to_translate_warns_once_and_runs_eagerly(fast):
    def f(x, w):  # every op is known, but dropout in training mode is random
        return F.dropout(F.linear(x, w), 0.5, training=True) * 0 + F.linear(x, w)

    gm = torch.fx.symbolic_trace(f)
    x, w = torch.rand(2, 3), nn.Parameter(torch.rand(4, 3))
    compiled = kiln.torch.dynamo_backend(gm, [x, w], options=fast)
    assert isinstance(compiled, kiln.torch.FxModule)
    with pytest.warns(RuntimeWarning, match="dropout in training mode"):
        y = compiled(x, w)
    assert_close(y.detach().numpy(), eager(f, x, w).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(x, w)  # once per graph
    assert "FxTranslationError" in compiled.fallback_reason


def test_unknown_options_are_a_type_error():
    with pytest.raises(TypeError, match="bogus"):
        kiln.torch.dynamo_backend(cumsum_graph(), [], options={"bogus": 1})


# ---- torch.compile (torch >= 2) -----------------------------------------------------------


@needs_torch_2
def test_torch_compile_resnet18(fast):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no eager fallback
        y = eager(compiled, x)
    assert_close(y.numpy(), eager(net, x).numpy())


@needs_torch_2
@pytest.mark.parametrize("block", ["hand_built", "nn.TransformerEncoderLayer"])
def test_torch_compile_transformer_block(block, fast):
    torch.manual_seed(0)
    if block == "hand_built":
        net = TransformerBlock().eval()
    else:
        net = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True).eval()
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.randn(2, 10, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = compiled(x)  # with grad enabled: nn.TransformerEncoderLayer takes its decomposed path
    assert_close(y.detach().numpy(), eager(net, x).numpy())


@needs_torch_2
def test_torch_compile_graph_break(fast):
    net = small_cnn(1)

    def f(x):
        y = net(x)
        print("a graph break")  # dynamo splits the function into two graphs here
        return F.softmax(y * 2, dim=1)

    torch._dynamo.reset()
    compiled = torch.compile(f, backend="kiln", options=fast)
    x = torch.rand(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = eager(compiled, x)
    assert_close(y.numpy(), eager(f, x).numpy())


@needs_torch_2
def test_torch_compile_weight_change_is_refit(fast):
    net = small_cnn(2)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.rand(2, 3, 16, 16)
    before = eager(compiled, x).clone()
    net.load_state_dict(small_cnn(3).state_dict())
    after = eager(compiled, x)
    assert_close(after.numpy(), eager(net, x).numpy())
    assert float((after - before).abs().max()) > 1e-3
    with torch.no_grad():
        net[0].weight.mul_(-1)
    assert_close(eager(compiled, x).numpy(), eager(net, x).numpy())


@needs_torch_2
def test_torch_compile_weight_change_refits_in_place(fast):
    """Through dynamo: the FxModule the backend made refits the compiled
    model it holds instead of compiling again."""
    made = []

    def backend(gm, example_inputs):
        fx = kiln.torch.dynamo_backend(gm, example_inputs, options=fast)
        made.append(fx)
        return fx

    net = small_cnn(4)
    torch._dynamo.reset()
    compiled = torch.compile(net, backend=backend)
    x = torch.rand(2, 3, 16, 16)
    eager(compiled, x)
    fx_modules = [m for m in made if isinstance(m, kiln.torch.FxModule)]
    assert fx_modules
    first = [m.last_model for m in fx_modules]
    net.load_state_dict(small_cnn(5).state_dict())
    assert_close(eager(compiled, x).numpy(), eager(net, x).numpy())
    with torch.no_grad():
        net[0].weight.mul_(-1)
    assert_close(eager(compiled, x).numpy(), eager(net, x).numpy())
    assert sum(m.refits for m in fx_modules) >= 2
    assert all(m.recompiles == 0 for m in fx_modules)
    assert [m.last_model for m in fx_modules] == first


@needs_torch_2
@pytest.mark.parametrize("grad", [True, False], ids=["decomposed", "fast_path"])
@pytest.mark.parametrize("name", MASK_CASES)
def test_torch_compile_multihead_attention_with_masks(name, grad, fast):
    attn_mask, pad = attention_masks(2, 6, 6)[name]
    net = MaskedMHA(True, attn_mask is not None).eval()
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.randn(2, 6, 32)
    args = [x, attn_mask if attn_mask is not None else torch.zeros(1), pad]
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("error", RuntimeWarning)
        # grad enabled: the decomposed path; without, torch's fused kernel where its conditions hold
        out, weights = compiled(*args)
    expected_out, expected_weights = eager(net, *args)
    assert_close(out.detach().numpy(), expected_out.numpy())
    assert_close(weights.detach().numpy(), expected_weights.numpy())


@needs_torch_2
@pytest.mark.parametrize("name", list(sdpa_masks()))
def test_torch_compile_scaled_dot_product_attention_masks(name, fast):
    mask = sdpa_masks()[name]
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    torch._dynamo.reset()
    compiled = torch.compile(SDPA(), backend="kiln", options=fast)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = eager(compiled, q, k, v, mask)
    assert_close(got.numpy(), eager(F.scaled_dot_product_attention, q, k, v, mask).numpy())


@needs_torch_2
def test_torch_compile_transposed_convolutions(fast):
    net = TransposedConvs().eval()
    torch._dynamo.reset()
    compiled = torch.compile(net, backend="kiln", options=fast)
    x = torch.randn(2, 4, 5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = eager(compiled, x)
    for g, e in zip(got, eager(net, x)):
        assert_close(g.numpy(), e.numpy())


# ---- Dynamic dims (torch.export's symbolic shapes) ----------------------------------------


class SymInt:
    """Stands in for torch.SymInt in a node's example value: a dim only
    known at run time (the translator reads the type's name)."""

    def __init__(self, hint):
        self.hint = hint


class SymbolicValue:
    def __init__(self, tensor, symbolic):
        self.dtype = tensor.dtype
        self.shape = tuple(SymInt(d) if d == symbolic else d for d in tensor.shape)


def test_a_symbolic_batch_dim_stays_dynamic(fast):
    net = TransformerBlock().eval()
    gm = torch.fx.symbolic_trace(net)  # x.size(0) feeds view and reshape
    batch = 7  # no other dim of the block is 7
    values = fx_translate.example_values(gm, [torch.randn(batch, 10, 32)])
    values = {n: SymbolicValue(v, batch) if isinstance(v, torch.Tensor) else v for n, v in values.items()}
    t = fx_translate.translate(gm, values=values)
    assert [v.shape for _, v in t.inputs] == [(None, 10, 32)]
    spec = kiln.Input(min_shape=(1, 10, 32), opt_shape=(4, 10, 32), max_shape=(8, 10, 32), name=t.inputs[0][1].name)
    model = kiln.compile(t.onnx_bytes(), inputs=[spec], **fast)
    for n in (1, 3, 8):
        x = torch.randn(n, 10, 32)
        assert_close(t.rebuild(kiln.torch.run_torch(model, [x])).numpy(), eager(net, x).numpy())


# ---- torch.export (torch >= 2) --------------------------------------------------------------


@needs_torch_2
@pytest.mark.parametrize("name", ["resnet18", "transformer_block"])
def test_exported_program_with_a_dim_range(name, fast):
    from torch.export import Dim, export

    torch.manual_seed(0)
    if name == "resnet18":
        net, shape = torchvision.models.resnet18(weights=None).eval(), (2, 3, 64, 64)
    else:
        net, shape = TransformerBlock().eval(), (2, 10, 32)
    ep = export(net, (torch.randn(*shape),), dynamic_shapes={"x": {0: Dim("batch", min=1, max=6)}})
    model = kiln.torch.compile(ep, **fast)
    assert [(i["min"][0], i["max"][0]) for i in model.inputs] == [(1, 6)]
    for n in (1, 5):
        x = torch.randn(n, *shape[1:])
        assert_close(model(x).numpy(), eager(net, x).numpy())
    with pytest.raises(kiln.InvalidArgumentError, match="outside the compiled range"):
        model(torch.randn(7, *shape[1:]))


@needs_torch_2
def test_exported_program_refits_from_another_programs_weights(fast):
    from torch.export import export

    x = torch.rand(2, 3, 16, 16)
    net, other = small_cnn(0), small_cnn(6)
    model = kiln.torch.compile(export(net, (x,)), **fast)
    before = model(x).clone()
    stats = model.refit(export(other, (x,)))
    assert stats["engines"] >= 1
    after = model(x)
    assert_close(after.numpy(), eager(other, x).numpy())
    assert float((after - before).abs().max()) > 1e-3
    # By name, one tensor: its initializers (BatchNorm folded in lowering) are refitted.
    model.refit({"0.weight": other[0].weight.detach() * -1})
    with torch.no_grad():
        other[0].weight.mul_(-1)
    assert_close(model(x).numpy(), eager(other, x).numpy())
    with pytest.raises(kiln.InvalidArgumentError, match="no parameter or buffer named"):
        model.refit({"no.such": other[0].weight})
