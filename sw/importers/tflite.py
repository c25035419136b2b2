"""TFLite full-integer models -> `sw.graph.Graph`, bit-exact with LiteRT's reference kernels.

Accepted: what TensorFlow's converter writes for full-integer quantization (int8 activations,
int8 weights with zero point 0 per output channel or per tensor, int32 bias with zero point 0),
read with the `tflite` package (`tflite_reader`; no TensorFlow). Each op becomes one graph node
whose `sim.reference` kernel is the integer arithmetic LiteRT's reference kernel runs::

    CONV_2D            Conv2D           rounding "double" (MultiplyByQuantizedMultiplier)
    DEPTHWISE_CONV_2D  DepthwiseConv2D  rounding "double"
    FULLY_CONNECTED    Dense            rounding "single" (current LiteRT's FC rounds once)
    MAX_POOL_2D        MaxPool2D        AVERAGE_POOL_2D  AveragePool2D
    MEAN (axes 1, 2)   Mean             ADD (same shapes)  Add
    RESHAPE            Reshape          PAD / PADV2 (value = zero point)  Pad
    CONCATENATION      Concat (last axis)                  QUANTIZE int8 -> int8  Requantize
    SOFTMAX            Softmax: a host float kernel, not proven bit-exact with LiteRT's int8
                       SOFTMAX (equal on the zoo: 3,000 of 3,000 outputs of the CIFAR-shaped CNN)

Multipliers are derived as LiteRT's Prepare does: ``QuantizeMultiplier`` of the double
``input_scale * weight_scale[c] / output_scale`` (scales as the file's float32 values); fused
NONE/RELU/RELU6 become act_min/act_max by ``CalculateActivationRangeQuantized``. A float
QUANTIZE on a graph input and a DEQUANTIZE on a graph output are the model's edges: the graph's
input and output are the int8 tensors between them, carrying their scale and zero point.

Refused by name (`ModelImportError`): float ops (an unquantized model), uint8/int16
activations, weights with a nonzero zero point or quantized on an axis other than the output
channel, dilated or grouped convolutions, effective scales >= 1 (the requantizer only shifts
right), broadcasting ADD, ops with no graph kind (the list of supported ops in the message).
"""

import numpy as np

from sim.reference import INT8_MAX, INT8_MIN, quantize_multiplier, same_padding
from sw.graph import Graph, Node, Tensor
from sw.importers.common import ModelImportError, inconsistent_model, unsupported_op
from sw.importers.tflite_reader import read_tflite
from sw import ops

__all__ = ["tflite_to_graph", "SUPPORTED_OPS"]

_QUANTIZE_HINT = (
    "quantize it for full-integer inference with the TFLite converter: "
    "converter.optimizations = [tf.lite.Optimize.DEFAULT], converter.representative_dataset = "
    "<calibration inputs>, converter.target_spec.supported_ops = "
    "[tf.lite.OpsSet.TFLITE_BUILTINS_INT8]")


def tflite_to_graph(data):
    """The `Graph` of TFLite flatbuffer bytes (see the module docstring)."""
    return inconsistent_model("TFLite", lambda d: _Lowering(read_tflite(d)).graph(), data)


class _Lowering:
    def __init__(self, model):
        self.model = model
        self.tensors = {}           # TFLite tensor index -> graph Tensor
        self.nodes = []
        self.edges = {}             # float model input/output index -> int8 tensor index
        self.names = set()

    # Graph assembly ------------------------------------------------------------------------------

    def graph(self):
        for operator in self.model.operators:
            self._lower(operator)
        inputs = [self._edge(index) for index in self.model.inputs]
        outputs = [self._edge(index) for index in self.model.outputs]
        try:
            return Graph(tensors=tuple(self.tensors.values()), nodes=tuple(self.nodes),
                         inputs=tuple(inputs), outputs=tuple(outputs))
        except ValueError as error:
            raise ModelImportError(f"the TFLite model does not form a valid graph: {error}") \
                from None

    def _edge(self, index):
        """The graph tensor name of model input/output `index` (past its QUANTIZE/DEQUANTIZE)."""
        index = self.edges.get(index, index)
        if index not in self.tensors:
            self.tensors[index] = self._activation(self.model.tensors[index])
        return self.tensors[index].name

    def _activation(self, tensor):
        """The graph Tensor of an int8 activation (batch axis dropped)."""
        if tensor.dtype != np.int8 or not tensor.quantized:
            kind = tensor.dtype.name if tensor.quantized or tensor.dtype != np.float32 \
                else "float32 (unquantized)"
            raise ModelImportError(f"{tensor.describe()} is {kind}; the graph takes int8 "
                                   f"activations with one scale and zero point")
        if len(tensor.scales) != 1:
            raise ModelImportError(f"{tensor.describe()} is an activation quantized per channel "
                                   f"({len(tensor.scales)} scales); activations need one scale")
        if not tensor.shape or tensor.shape[0] != 1:
            raise ModelImportError(f"{tensor.describe()}: activations must have batch 1 first")
        name = tensor.name if tensor.name and tensor.name not in self.names \
            else f"{tensor.name}#{tensor.index}"
        self.names.add(name)
        return Tensor(name=name, shape=tensor.shape[1:] or (1,), dtype="int8",
                      scale=float(tensor.scales[0]), zero_point=int(tensor.zero_points[0]))

    def _add(self, operator, op, inputs, output):
        for index in (*inputs, output):
            if index not in self.tensors:
                self.tensors[index] = self._activation(self.model.tensors[index])
        name = self.tensors[output].name
        try:
            self.nodes.append(Node(name=name, op=op, inputs=tuple(self.tensors[i].name
                                                                   for i in inputs),
                                   output=name))
        except ValueError as error:
            raise self._error(operator, str(error)) from None

    def _error(self, operator, message):
        output = self.model.tensors[operator.outputs[0]].name if operator.outputs else "?"
        return ModelImportError(f"TFLite op {operator.op} (node {output!r}, position "
                                f"{operator.position}): {message}")

    # Ops ---------------------------------------------------------------------------------------

    def _lower(self, operator):
        self._check_types(operator)
        handler = _HANDLERS.get(operator.op)
        if handler is None:
            output = self.model.tensors[operator.outputs[0]].name if operator.outputs else "?"
            raise unsupported_op("TFLite", operator.op, output, operator.position, SUPPORTED_OPS)
        try:
            handler(self, operator, *self._operands(operator))
        except ModelImportError:
            raise
        except ValueError as error:       # an ops constructor rejecting a value
            raise self._error(operator, str(error)) from None

    def _operands(self, operator):
        inputs = [None if i < 0 else self.model.tensors[i] for i in operator.inputs]
        return inputs, self.model.tensors[operator.outputs[0]]

    def _check_types(self, operator):
        """Float ops mean an unquantized model; other non-int8 activations are refused."""
        edges = operator.op in ("QUANTIZE", "DEQUANTIZE")
        for index in (*operator.inputs, *operator.outputs):
            if index < 0:
                continue
            tensor = self.model.tensors[index]
            if tensor.dtype == np.float32 and not edges and tensor.data is None:
                raise ModelImportError(
                    f"the TFLite model is not quantized: its first float op is {operator.op} "
                    f"(position {operator.position}, {tensor.describe()}); {_QUANTIZE_HINT}")
            if tensor.data is None and tensor.dtype in (np.uint8, np.int16):
                raise ModelImportError(
                    f"TFLite op {operator.op} (position {operator.position}) uses "
                    f"{tensor.describe()}: {tensor.dtype.name} activations are not supported, "
                    f"only int8 (convert with inference_input_type/inference_output_type "
                    f"tf.int8 and TFLITE_BUILTINS_INT8)")

    def quantize(self, operator, inputs, output):
        (source,) = inputs[:1]
        if source.dtype == np.float32:
            if operator.inputs[0] not in self.model.inputs:
                raise self._error(operator, "a float -> int8 QUANTIZE is supported only on a "
                                            "graph input")
            self.edges[operator.inputs[0]] = operator.outputs[0]
            return
        self._add(operator, ops.Requantize(
            input_scale=float(source.scales[0]), input_zero_point=int(source.zero_points[0]),
            output_scale=float(output.scales[0]), output_zero_point=int(output.zero_points[0])),
            [source.index], output.index)

    def dequantize(self, operator, inputs, output):
        if operator.outputs[0] not in self.model.outputs:
            raise self._error(operator, "DEQUANTIZE is supported only on a graph output")
        self.edges[operator.outputs[0]] = operator.inputs[0]

    def conv(self, operator, inputs, output):
        x, weights, bias = (inputs + [None])[:3]
        options = operator.options
        if (options.DilationHFactor(), options.DilationWFactor()) != (1, 1):
            raise self._error(operator, f"dilated convolutions (dilation "
                                        f"{options.DilationHFactor()}x{options.DilationWFactor()})"
                                        f" are not supported")
        if weights.shape[3] != x.shape[3]:
            raise self._error(operator, f"grouped convolutions are not supported (input has "
                                        f"{x.shape[3]} channels, the filter {weights.shape[3]})")
        self._weights(operator, weights, axis=0)
        stride = (options.StrideH(), options.StrideW())
        self._add(operator, ops.Conv2D(
            weights=weights.data.transpose(1, 2, 3, 0), stride=stride,
            padding=self._padding(options, x, weights.shape[1:3], stride),
            rounding="double", **self._requant(operator, x, weights, bias, output, 0)),
            [x.index], output.index)

    def depthwise(self, operator, inputs, output):
        x, weights, bias = (inputs + [None])[:3]
        options = operator.options
        if (options.DilationHFactor(), options.DilationWFactor()) != (1, 1):
            raise self._error(operator, "dilated convolutions are not supported")
        channels = x.shape[3]
        _, kh, kw, out_channels = weights.shape
        if out_channels % channels:
            raise self._error(operator, f"{out_channels} output channels are not a multiple of "
                                        f"the {channels} input channels")
        self._weights(operator, weights, axis=3)
        stride = (options.StrideH(), options.StrideW())
        self._add(operator, ops.DepthwiseConv2D(
            weights=weights.data.reshape(kh, kw, channels, out_channels // channels),
            stride=stride, padding=self._padding(options, x, (kh, kw), stride),
            rounding="double", **self._requant(operator, x, weights, bias, output, 3)),
            [x.index], output.index)

    def dense(self, operator, inputs, output):
        x, weights, bias = (inputs + [None])[:3]
        options = operator.options
        if options is not None and options.KeepNumDims():
            raise self._error(operator, "keep_num_dims=True is not supported")
        if int(np.prod(x.shape)) != weights.shape[1] or len(output.shape) != 2:
            raise self._error(operator, f"input {list(x.shape)} and weights "
                                        f"{list(weights.shape)} do not form a [1, K] x [K, N] "
                                        f"product")
        self._weights(operator, weights, axis=0)
        self._add(operator, ops.Dense(weights=weights.data.T, rounding="single",
                                      **self._requant(operator, x, weights, bias, output, 0)),
                  [self._flat(operator, x)], output.index)

    def _flat(self, operator, x):
        """x itself when it is [1, K]; else a Reshape to [K] (FULLY_CONNECTED flattens its
        input, in NHWC order), made once per tensor."""
        key = ("flat", x.index)
        if len(x.shape) == 2 or key in self.tensors:
            return x.index if len(x.shape) == 2 else key
        if x.index not in self.tensors:
            self.tensors[x.index] = self._activation(x)
        source = self.tensors[x.index]
        name = f"{source.name}/flattened"
        self.tensors[key] = Tensor(name=name, shape=(int(np.prod(source.shape)),),
                                   scale=source.scale, zero_point=source.zero_point)
        self.nodes.append(Node(name=name, op=ops.Reshape(shape=self.tensors[key].shape),
                               inputs=(source.name,), output=name))
        return key

    def pool(self, operator, inputs, output):
        (x,) = inputs
        options = operator.options
        size = (options.FilterHeight(), options.FilterWidth())
        stride = (options.StrideH(), options.StrideW())
        kind = ops.MaxPool2D if operator.op == "MAX_POOL_2D" else ops.AveragePool2D
        self._same_quantization(operator, x, output)
        self._add(operator, kind(pool_size=size, stride=stride,
                                 padding=self._padding(options, x, size, stride),
                                 **self._activation_range(operator, output)),
                  [x.index], output.index)

    def mean(self, operator, inputs, output):
        x, axes = inputs
        if axes.data is None or sorted(int(a) % 4 for a in axes.data.ravel()) != [1, 2] \
                or len(x.shape) != 4:
            raise self._error(operator, f"only MEAN over axes [1, 2] of a 4-D tensor (global "
                                        f"average pool) is supported, not axes "
                                        f"{None if axes.data is None else axes.data.tolist()}")
        if operator.options is not None and operator.options.KeepDims():
            raise self._error(operator, "MEAN with keep_dims=True is not supported")
        self._add(operator, ops.Mean(
            input_scale=float(x.scales[0]), input_zero_point=int(x.zero_points[0]),
            output_scale=float(output.scales[0]), output_zero_point=int(output.zero_points[0])),
            [x.index], output.index)

    def add(self, operator, inputs, output):
        first, second = inputs
        if first.shape != second.shape:
            raise self._error(operator, f"broadcasting ADD ({list(first.shape)} + "
                                        f"{list(second.shape)}) is not supported")
        if first.data is not None or second.data is not None:
            raise self._error(operator, "ADD of a constant tensor is not supported")
        self._add(operator, ops.Add(
            input1_scale=float(first.scales[0]), input1_zero_point=int(first.zero_points[0]),
            input2_scale=float(second.scales[0]), input2_zero_point=int(second.zero_points[0]),
            output_scale=float(output.scales[0]), output_zero_point=int(output.zero_points[0]),
            **self._activation_range(operator, output)), [first.index, second.index],
            output.index)

    def reshape(self, operator, inputs, output):
        x = inputs[0]
        self._same_quantization(operator, x, output)
        if not output.shape or output.shape[0] != 1:
            raise self._error(operator, f"RESHAPE must keep batch 1 first, not {output.shape}")
        self._add(operator, ops.Reshape(shape=output.shape[1:]), [x.index], output.index)

    def pad(self, operator, inputs, output):
        x, paddings = inputs[:2]
        if paddings.data is None:
            raise self._error(operator, "the paddings must be a constant tensor")
        if len(inputs) > 2 and inputs[2] is not None:
            value = inputs[2].data
            if value is None or int(value.ravel()[0]) != int(x.zero_points[0]):
                raise self._error(operator, "PADV2 must pad with the input zero point")
        pads = [tuple(int(v) for v in pair) for pair in paddings.data.reshape(-1, 2)]
        if pads[0] != (0, 0):
            raise self._error(operator, "padding the batch axis is not supported")
        self._same_quantization(operator, x, output)
        self._add(operator, ops.Pad(pads=tuple(pads[1:]), zero_point=int(x.zero_points[0])),
                  [x.index], output.index)

    def concat(self, operator, inputs, output):
        options = operator.options
        if options.Axis() % len(output.shape) != len(output.shape) - 1:
            raise self._error(operator, f"only concatenation on the last axis is supported, "
                                        f"not axis {options.Axis()}")
        if options.FusedActivationFunction() != 0:
            raise self._error(operator, "a fused activation on CONCATENATION is not supported")
        self._add(operator, ops.Concat(
            input_scales=tuple(float(t.scales[0]) for t in inputs),
            input_zero_points=tuple(int(t.zero_points[0]) for t in inputs),
            output_scale=float(output.scales[0]), output_zero_point=int(output.zero_points[0])),
            [t.index for t in inputs], output.index)

    def softmax(self, operator, inputs, output):
        (x,) = inputs
        self._add(operator, ops.Softmax(input_scale=float(x.scales[0]),
                                        input_zero_point=int(x.zero_points[0]),
                                        beta=float(operator.options.Beta())),
                  [x.index], output.index)

    # Parameters ----------------------------------------------------------------------------------

    def _weights(self, operator, weights, axis):
        """int8 weights with zero point 0, per tensor or per channel on `axis`."""
        if weights.data is None or weights.dtype != np.int8 or not weights.quantized:
            raise self._error(operator, f"weights {weights.describe()} must be a constant int8 "
                                        f"quantized tensor")
        if np.any(weights.zero_points != 0):
            raise self._error(operator, f"asymmetric weights ({weights.describe()} has zero "
                                        f"points {weights.zero_points[:4].tolist()}) are not "
                                        f"supported; weights must have zero point 0")
        if len(weights.scales) > 1 and (weights.axis != axis
                                        or len(weights.scales) != weights.shape[axis]):
            raise self._error(operator, f"{weights.describe()} is quantized per channel on "
                                        f"axis {weights.axis} with {len(weights.scales)} scales; "
                                        f"{operator.op} takes per-channel scales on axis {axis}")

    def _requant(self, operator, x, weights, bias, output, axis):
        """bias, multiplier, shift, zero points and activation range of a requantizing layer."""
        channels = weights.shape[axis]
        input_scale = float(x.scales[0])
        scales = np.broadcast_to(weights.scales, (channels,))
        multipliers, shifts = [], []
        for channel, weight_scale in enumerate(scales):
            real = input_scale * float(weight_scale) / float(output.scales[0])
            multiplier, shift = quantize_multiplier(real)
            if shift > 0:
                raise self._error(operator, f"output channel {channel} has effective scale "
                                            f"{real:.6g} >= 1 (input scale * weight scale / "
                                            f"output scale); the requantizer only shifts right")
            multipliers.append(multiplier)
            shifts.append(shift)
        if bias is None:
            bias_values = np.zeros(channels, np.int32)
        elif bias.data is None or bias.dtype != np.int32 or bias.shape != (channels,):
            raise self._error(operator, f"bias {bias.describe()} must be a constant int32 "
                                        f"[{channels}] tensor")
        else:
            bias_values = bias.data
        return dict(bias=bias_values, multiplier=np.array(multipliers),
                    shift=np.array(shifts), input_zero_point=int(x.zero_points[0]),
                    output_zero_point=int(output.zero_points[0]),
                    **self._activation_range(operator, output))

    def _activation_range(self, operator, output):
        """act_min/act_max of the fused activation (TFLite CalculateActivationRangeQuantized:
        the bound quantized in float32, rounded half away from zero)."""
        options = operator.options
        function = options.FusedActivationFunction() if options is not None else 0
        scale = np.float32(output.scales[0])
        zero_point = int(output.zero_points[0])

        def quantize(value):
            quotient = float(np.float32(value) / scale)
            return zero_point + int(np.sign(quotient) * np.floor(abs(quotient) + 0.5))

        if function == 0:
            return dict(act_min=INT8_MIN, act_max=INT8_MAX)
        if function == 1:
            return dict(act_min=max(INT8_MIN, quantize(0.0)), act_max=INT8_MAX)
        if function == 3:
            return dict(act_min=max(INT8_MIN, quantize(0.0)),
                        act_max=min(INT8_MAX, quantize(6.0)))
        if function == 2:
            return dict(act_min=max(INT8_MIN, quantize(-1.0)),
                        act_max=min(INT8_MAX, quantize(1.0)))
        raise self._error(operator, f"fused activation {function} is not supported (NONE, "
                                    f"RELU, RELU_N1_TO_1 and RELU6 are)")

    def _padding(self, options, x, kernel, stride):
        if options.Padding() == 1:          # VALID
            return (0, 0, 0, 0)
        return same_padding(x.shape[1], x.shape[2], kernel[0], kernel[1], stride)

    def _same_quantization(self, operator, x, output):
        found = (float(x.scales[0]), int(x.zero_points[0]))
        wanted = (float(output.scales[0]), int(output.zero_points[0]))
        if found != wanted:
            raise self._error(operator, f"input (scale, zero point) {found} and output {wanted} "
                                        f"differ; {operator.op} keeps the quantization")


_HANDLERS = {
    "QUANTIZE": _Lowering.quantize, "DEQUANTIZE": _Lowering.dequantize,
    "CONV_2D": _Lowering.conv, "DEPTHWISE_CONV_2D": _Lowering.depthwise,
    "FULLY_CONNECTED": _Lowering.dense, "MAX_POOL_2D": _Lowering.pool,
    "AVERAGE_POOL_2D": _Lowering.pool, "MEAN": _Lowering.mean, "ADD": _Lowering.add,
    "RESHAPE": _Lowering.reshape, "PAD": _Lowering.pad, "PADV2": _Lowering.pad,
    "CONCATENATION": _Lowering.concat, "SOFTMAX": _Lowering.softmax,
}
SUPPORTED_OPS = tuple(sorted(_HANDLERS))
