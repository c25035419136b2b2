"""The graph kernels of `sim.reference` against LiteRT itself.

Each test writes a one-operator .tflite model (tests/litert_models.py) and runs it with
`ai_edge_litert` three ways: "default" (the interpreter as it comes, XNNPACK delegate on),
"builtin" (the builtin optimized kernels, no delegate) and "reference" (the builtin reference
kernels). Where a kernel is bit-exact the test asserts equality for every way; where LiteRT's
ways disagree with each other, the test states which one the kernel follows and bounds the rest.
"""

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite")

from ai_edge_litert.interpreter import OpResolverType  # noqa: E402
from tflite import BuiltinOperator  # noqa: E402

from litert_models import TensorDef, run_op  # noqa: E402
from sim import reference as ref  # noqa: E402

RESOLVERS = {"default": OpResolverType.AUTO,
             "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
             "reference": OpResolverType.BUILTIN_REF}
RELU = 1          # tflite ActivationFunctionType.RELU


def options(name, **fields):
    """The `name` options table with the given fields (StrideW etc.), as `run_op` takes it."""
    return name, fields


def litert(tensors, inputs, outputs, opcode, arrays, option=None):
    """{way: LiteRT's output} for the one-operator model."""
    return {way: run_op(tensors, inputs, outputs, opcode, arrays, options=option,
                        resolver=resolver)
            for way, resolver in RESOLVERS.items()}


def assert_equal(outputs, expected, ways=tuple(RESOLVERS)):
    for way in ways:
        np.testing.assert_array_equal(outputs[way], expected, err_msg=f"LiteRT {way}")


def differences(outputs, expected, ways):
    """{way: outputs differing from `expected`}, asserting none by more than one step."""
    counts = {}
    for way in ways:
        distance = np.abs(outputs[way].astype(int) - expected.astype(int))
        assert distance.max() <= 1, way
        counts[way] = int((distance > 0).sum())
    return counts


def int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def scale(rng, low=0.005, high=0.2):
    return float(np.float32(rng.uniform(low, high)))


@pytest.mark.parametrize("seed", range(4))
def test_add(seed):
    rng = np.random.default_rng(seed)
    shape = (3, 5, 4, 6)
    x1, x2 = int8(rng, shape), int8(rng, shape)
    (s1, s2, so), (z1, z2, zo) = [scale(rng) for _ in range(3)], rng.integers(-128, 128, 3)
    tensors = [TensorDef(shape, scale=[s1], zero_point=[z1]),
               TensorDef(shape, scale=[s2], zero_point=[z2]),
               TensorDef(shape, scale=[so], zero_point=[zo])]
    expected = ref.add(x1, x2, input1_scale=s1, input1_zero_point=int(z1), input2_scale=s2,
                       input2_zero_point=int(z2), output_scale=so, output_zero_point=int(zo),
                       act_min=int(zo))
    assert_equal(litert(tensors, [0, 1], [2], BuiltinOperator.ADD, [x1, x2],
                            options("AddOptions", FusedActivationFunction=RELU)), expected)


POOLS = [(2, 2, False), (3, 2, True), (3, 1, True), (3, 2, False), (2, 1, True), (5, 3, True)]


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("size, stride, same", POOLS)
def test_pools(kind, size, stride, same):
    rng = np.random.default_rng(size * 10 + stride + same)
    x = int8(rng, (2, 9, 7, 3))
    pads = ref.same_padding(9, 7, size, size, stride) if same else 0
    kernel = ref.max_pool2d if kind == "max" else ref.average_pool2d
    expected = kernel(x, size, stride, pads)
    quant = dict(scale=[0.1], zero_point=[-5])
    tensors = [TensorDef(x.shape, **quant), TensorDef(expected.shape, **quant)]
    opcode = BuiltinOperator.MAX_POOL_2D if kind == "max" else BuiltinOperator.AVERAGE_POOL_2D
    option = options("Pool2DOptions", Padding=0 if same else 1, StrideW=stride, StrideH=stride,
                     FilterWidth=size, FilterHeight=size)
    assert_equal(litert(tensors, [0], [1], opcode, [x], option), expected)


def per_channel_conv(rng, x, w, stride, same, depthwise):
    """(tensors, option, accumulators, multipliers, shifts) of a per-channel int8 convolution
    (input zero point -4, output 6, fused ReLU), depthwise [KH, KW, Cin, M] or HWIO."""
    kernel, channels = w.shape[0], w.shape[2] * w.shape[3] if depthwise else w.shape[3]
    w_scales = rng.uniform(0.001, 0.01, channels).astype(np.float32)
    s_in, s_out = np.float32(scale(rng, 0.01, 0.1)), np.float32(scale(rng, 0.05, 0.3))
    bias = rng.integers(-2000, 2000, channels).astype(np.int32)
    params = [ref.quantize_multiplier(float(s_in) * float(s) / float(s_out)) for s in w_scales]
    pads = ref.same_padding(*x.shape[1:3], kernel, kernel, stride) if same else 0
    if depthwise:
        acc = ref.depthwise_conv2d(x, w, bias, stride, pads, -4)
        filter_def = TensorDef((1, kernel, kernel, channels), data=w.reshape(1, kernel, kernel, -1),
                               scale=list(w_scales), zero_point=[0] * channels, axis=3)
        option = options("DepthwiseConv2DOptions", Padding=0 if same else 1, StrideW=stride,
                         StrideH=stride, DepthMultiplier=w.shape[3], FusedActivationFunction=RELU,
                         DilationWFactor=1, DilationHFactor=1)
    else:
        acc = ref.conv2d(x, w, bias, stride, pads, -4)
        filter_def = TensorDef((channels, kernel, kernel, w.shape[2]), data=w.transpose(3, 0, 1, 2),
                               scale=list(w_scales), zero_point=[0] * channels, axis=0)
        option = options("Conv2DOptions", Padding=0 if same else 1, StrideW=stride, StrideH=stride,
                         FusedActivationFunction=RELU, DilationWFactor=1, DilationHFactor=1)
    tensors = [TensorDef(x.shape, scale=[s_in], zero_point=[-4]), filter_def,
               TensorDef((channels,), np.int32, data=bias, scale=list(s_in * w_scales),
                         zero_point=[0] * channels),
               TensorDef(acc.shape, scale=[s_out], zero_point=[6])]
    return tensors, option, acc, [m for m, _ in params], [shift for _, shift in params]


def requantized(acc, multipliers, shifts, rounding):
    return ref.requantize(acc, multipliers, shifts, 6, 6, 127, rounding=rounding)


def test_depthwise_conv2d_in_both_rounding_forms():
    """DepthwiseConv2D with rounding="double" is LiteRT's builtin and reference kernels; with
    "single" it is the default interpreter (XNNPACK), which rounds once."""
    rng = np.random.default_rng(10)
    for kernel, stride, multiplier, same in [(3, 1, 1, True), (3, 2, 2, True), (2, 1, 3, False),
                                             (5, 2, 1, True), (1, 1, 2, False), (3, 1, 3, False)]:
        x = int8(rng, (2, 8, 7, 3))
        w = rng.integers(-127, 128, (kernel, kernel, 3, multiplier)).astype(np.int8)
        tensors, option, acc, multipliers, shifts = per_channel_conv(rng, x, w, stride, same,
                                                                     depthwise=True)
        outputs = litert(tensors, [0, 1, 2], [3], BuiltinOperator.DEPTHWISE_CONV_2D, [x], option)
        assert_equal(outputs, requantized(acc, multipliers, shifts, "double"),
                     ("builtin", "reference"))
        assert_equal(outputs, requantized(acc, multipliers, shifts, "single"), ("default",))


def test_conv2d_rounding_forms_of_litert():
    """Which requantization LiteRT's CONV_2D uses: the reference kernel rounds twice (Conv2D's
    "double"), the default interpreter (XNNPACK) once ("single"); the builtin optimized kernel
    follows neither exactly but stays within one step."""
    rng = np.random.default_rng(11)
    for kernel, stride, same in [(3, 1, True), (3, 2, True), (1, 1, False), (3, 1, False)]:
        x = int8(rng, (2, 8, 7, 3))
        w = rng.integers(-127, 128, (kernel, kernel, 3, 5)).astype(np.int8)
        tensors, option, acc, multipliers, shifts = per_channel_conv(rng, x, w, stride, same,
                                                                     depthwise=False)
        outputs = litert(tensors, [0, 1, 2], [3], BuiltinOperator.CONV_2D, [x], option)
        assert_equal(outputs, requantized(acc, multipliers, shifts, "double"), ("reference",))
        assert_equal(outputs, requantized(acc, multipliers, shifts, "single"), ("default",))
        differences(outputs, requantized(acc, multipliers, shifts, "double"), ("builtin",))


def test_quantize_int8_to_int8():
    """requantize_int8 is LiteRT's reference QUANTIZE; its builtin optimized kernel and the
    default interpreter (XNNPACK) differ from it by one step on a few percent of outputs."""
    rng = np.random.default_rng(12)
    differing = {"builtin": 0, "default": 0}
    for _ in range(8):
        x = int8(rng, (4, 50))
        s_in, s_out = scale(rng), scale(rng)          # ratios on both sides of 1
        z_in, z_out = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ref.requantize_int8(x, input_scale=s_in, input_zero_point=z_in,
                                       output_scale=s_out, output_zero_point=z_out)
        tensors = [TensorDef(x.shape, scale=[s_in], zero_point=[z_in]),
                   TensorDef(x.shape, scale=[s_out], zero_point=[z_out])]
        outputs = litert(tensors, [0], [1], BuiltinOperator.QUANTIZE, [x])
        assert_equal(outputs, expected, ("reference",))
        for way, count in differences(outputs, expected, differing).items():
            differing[way] += count
    assert differing["default"] > 0


def test_concatenation_and_pad():
    rng = np.random.default_rng(7)
    a, b = int8(rng, (2, 3, 4, 2)), int8(rng, (2, 3, 4, 5))
    quant = dict(scale=[0.1], zero_point=[2])
    expected = ref.concatenate([a, b], input_quantizations=[(0.1, 2)] * 2, output_scale=0.1,
                               output_zero_point=2)
    tensors = [TensorDef(a.shape, **quant), TensorDef(b.shape, **quant),
               TensorDef(expected.shape, **quant)]
    assert_equal(litert(tensors, [0, 1], [2], BuiltinOperator.CONCATENATION, [a, b],
                            options("ConcatenationOptions", Axis=3)), expected)
    pads = [(1, 2), (0, 1), (0, 0)]
    expected = ref.pad(a, pads, 2)
    tensors = [TensorDef(a.shape, **quant),
               TensorDef((4, 2), np.int32, data=np.array([(0, 0), *pads], np.int32)),
               TensorDef(expected.shape, **quant)]
    assert_equal(litert(tensors, [0, 1], [2], BuiltinOperator.PAD, [a],
                            options("PadOptions")), expected)


def mean_outputs(rng, keep_dims):
    height, width = (int(v) for v in rng.integers(1, 9, 2))
    x = int8(rng, (6, height, width, 5))
    s_in, s_out = scale(rng, 0.01, 0.2), scale(rng, 0.005, 0.2)
    z_in, z_out = (int(v) for v in rng.integers(-128, 128, 2))
    expected = ref.mean_hw(x, input_scale=s_in, input_zero_point=z_in, output_scale=s_out,
                           output_zero_point=z_out)
    shape = (6, 1, 1, 5) if keep_dims else (6, 5)
    tensors = [TensorDef(x.shape, scale=[s_in], zero_point=[z_in]),
               TensorDef((2,), np.int32, data=np.array([1, 2], np.int32)),
               TensorDef(shape, scale=[s_out], zero_point=[z_out])]
    outputs = litert(tensors, [0, 1], [2], BuiltinOperator.MEAN, [x],
                     options("ReducerOptions", KeepDims=keep_dims))
    return {way: output.reshape(6, 5) for way, output in outputs.items()}, expected


@pytest.mark.parametrize("keep_dims", [False, True])
def test_mean_follows_the_reference_kernel(keep_dims):
    """mean_hw is LiteRT's reference MEAN. The builtin optimized kernel takes the same path
    unless keep_dims (then optimized_integer_ops::Mean, another formula); the default
    interpreter's XNNPACK rounds in float. Both of those stay within one step."""
    rng = np.random.default_rng(8 + keep_dims)
    differing = {way: 0 for way in RESOLVERS}
    for _ in range(10):
        outputs, expected = mean_outputs(rng, keep_dims)
        np.testing.assert_array_equal(outputs["reference"], expected)
        if not keep_dims:
            np.testing.assert_array_equal(outputs["builtin"], expected)
        for way, output in outputs.items():
            assert np.abs(output.astype(int) - expected).max() <= 1, way
            differing[way] += int((output != expected).sum())
    assert differing["default"] > 0          # the float-rounding XNNPACK path does differ


def test_softmax_host_kernel_against_litert():
    """softmax_int8 (float64) equalled LiteRT's default and builtin kernels on every output
    sampled here, and is within one step of the fixed-point reference kernel; it is not claimed
    bit-exact for inputs not tried."""
    rng = np.random.default_rng(9)
    for _ in range(8):
        classes = int(rng.integers(2, 20))
        x = int8(rng, (200, classes))
        s_in, beta = float(np.float32(10 ** rng.uniform(-2.5, 0))), float(rng.choice([0.5, 1, 2]))
        expected = ref.softmax_int8(x, input_scale=s_in, beta=beta)
        tensors = [TensorDef(x.shape, scale=[s_in], zero_point=[3]),
                   TensorDef(x.shape, scale=[1 / 256], zero_point=[-128])]
        outputs = litert(tensors, [0], [1], BuiltinOperator.SOFTMAX, [x],
                         options("SoftmaxOptions", Beta=beta))
        np.testing.assert_array_equal(outputs["default"], expected)
        np.testing.assert_array_equal(outputs["builtin"], expected)
        assert np.abs(outputs["reference"].astype(int) - expected).max() <= 1
