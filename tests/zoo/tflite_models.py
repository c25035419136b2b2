"""TFLite zoo: small networks written as flatbuffers with the `tflite` package's builders.

No TensorFlow: a network is described once in float (`Net`); `Net.tflite()` writes the float
model and `Net.quantized_tflite(calibration)` writes the full-integer model the TensorFlow
converter makes from it: the float model runs in LiteRT on the calibration inputs, each
activation's range gives its int8 scale and zero point (asymmetric, range widened to hold 0),
weights are int8 symmetric (zero point 0; per output channel for CONV_2D and DEPTHWISE_CONV_2D,
per tensor or per channel for FULLY_CONNECTED), biases int32 with scale ``in_scale * w_scale``,
a QUANTIZE after the float input and a DEQUANTIZE before the float output. Tensors that LiteRT's
int8 kernels require to share quantization (pooling, RESHAPE, PAD, CONCATENATION in and out)
share the union of their ranges; SOFTMAX outputs use scale 1/256, zero point -128.

Expected values never come from here: tests run the written file in LiteRT.
"""

import importlib

import flatbuffers
import numpy as np
import tflite

__all__ = ["Net", "TFLiteWriter", "run_litert", "ZOO"]

_TYPES = {np.dtype(np.float32): tflite.TensorType.FLOAT32,
          np.dtype(np.int8): tflite.TensorType.INT8, np.dtype(np.int32): tflite.TensorType.INT32,
          np.dtype(np.uint8): tflite.TensorType.UINT8, np.dtype(np.int16): tflite.TensorType.INT16}
_PADDING = {"same": tflite.Padding.SAME, "valid": tflite.Padding.VALID}
_ACTIVATION = {None: tflite.ActivationFunctionType.NONE, "relu": tflite.ActivationFunctionType.RELU,
               "relu6": tflite.ActivationFunctionType.RELU6}


def _table(builder, name, **fields):
    """Build the flatbuffer table `name` (a module of the `tflite` package) from field values."""
    module = importlib.import_module(f"tflite.{name}")
    module.Start(builder)
    for field, value in fields.items():
        getattr(module, f"Add{field}")(builder, value)
    return module.End(builder)


def _vector(builder, module_name, field, values, prepend):
    module = importlib.import_module(f"tflite.{module_name}")
    getattr(module, f"Start{field}Vector")(builder, len(values))
    for value in reversed(values):
        prepend(value)
    return builder.EndVector()


def _numbers(builder, module_name, field, values, kind):
    prepend = {"int32": builder.PrependInt32, "int64": builder.PrependInt64,
               "float32": builder.PrependFloat32, "uint8": builder.PrependUint8,
               "offset": builder.PrependUOffsetTRelative}[kind]
    return _vector(builder, module_name, field, list(values), prepend)


class TFLiteWriter:
    """Collects tensors, buffers and operators and serialises them as one TFLite model.

    `tensor` adds a named tensor (`data` for a constant; `quantization` as ``(scales, zero
    points, axis)``), `operator` a builtin operator reading and writing tensors by name (its
    options table by name and fields, e.g. ``"Conv2DOptions", StrideW=1``), `serialise` the
    model bytes with the given graph inputs and outputs. The zoo's `Net` and the one-operator
    models of ``tests/litert_models.py`` are written with it.
    """

    def __init__(self):
        self.tensors = []           # (name, shape, dtype, buffer index, quantization or None)
        self.buffers = [b""]        # buffer 0 is the empty buffer every activation points to
        self.operators = []         # (opcode index, inputs, outputs, options type, options fields)
        self.opcodes = []
        self.index = {}
        self.weight_quantization = None

    def tensor(self, name, shape, dtype, data=None, quantization=None):
        buffer = 0
        if data is not None:
            buffer = len(self.buffers)
            self.buffers.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
        self.index[name] = len(self.tensors)
        self.tensors.append((name, tuple(shape), np.dtype(dtype), buffer, quantization))
        return self.index[name]

    def operator(self, opcode, inputs, outputs, options_name=None, **options):
        if opcode not in self.opcodes:
            self.opcodes.append(opcode)
        self.operators.append((self.opcodes.index(opcode), [self.index[n] for n in inputs],
                               [self.index[n] for n in outputs], options_name, options))

    def serialise(self, inputs, outputs):
        builder = flatbuffers.Builder(1024)
        buffers = [_table(builder, "Buffer", Data=_numbers(builder, "Buffer", "Data", data,
                                                           "uint8")) if data else
                   _table(builder, "Buffer") for data in self.buffers]
        tensors = [self._tensor(builder, *tensor) for tensor in self.tensors]
        operators = [self._operator(builder, *operator) for operator in self.operators]
        opcodes = [_table(builder, "OperatorCode", DeprecatedBuiltinCode=min(code, 127),
                          BuiltinCode=code, Version=1) for code in self.opcodes]
        subgraph = _table(
            builder, "SubGraph",
            Tensors=_numbers(builder, "SubGraph", "Tensors", tensors, "offset"),
            Inputs=_numbers(builder, "SubGraph", "Inputs", [self.index[n] for n in inputs],
                            "int32"),
            Outputs=_numbers(builder, "SubGraph", "Outputs", [self.index[n] for n in outputs],
                             "int32"),
            Operators=_numbers(builder, "SubGraph", "Operators", operators, "offset"),
            Name=builder.CreateString("main"))
        model = _table(
            builder, "Model", Version=3,
            OperatorCodes=_numbers(builder, "Model", "OperatorCodes", opcodes, "offset"),
            Subgraphs=_numbers(builder, "Model", "Subgraphs", [subgraph], "offset"),
            Description=builder.CreateString("ecpnn test zoo"),
            Buffers=_numbers(builder, "Model", "Buffers", buffers, "offset"))
        builder.Finish(model, file_identifier=b"TFL3")
        return bytes(builder.Output())

    @staticmethod
    def _tensor(builder, name, shape, dtype, buffer, quantization):
        fields = {"Shape": _numbers(builder, "Tensor", "Shape", shape, "int32"),
                  "Type": _TYPES[dtype], "Buffer": buffer, "Name": builder.CreateString(name)}
        if quantization is not None:
            scales, zero_points, axis = quantization
            fields["Quantization"] = _table(
                builder, "QuantizationParameters",
                Scale=_numbers(builder, "QuantizationParameters", "Scale", scales, "float32"),
                ZeroPoint=_numbers(builder, "QuantizationParameters", "ZeroPoint", zero_points,
                                   "int64"),
                QuantizedDimension=axis)
        return _table(builder, "Tensor", **fields)

    @staticmethod
    def _operator(builder, opcode_index, inputs, outputs, options_name, options):
        fields = {"OpcodeIndex": opcode_index,
                  "Inputs": _numbers(builder, "Operator", "Inputs", inputs, "int32"),
                  "Outputs": _numbers(builder, "Operator", "Outputs", outputs, "int32")}
        if options_name is not None:
            fields["BuiltinOptionsType"] = getattr(tflite.BuiltinOptions, options_name)
            fields["BuiltinOptions"] = _table(builder, options_name, **options)
        return _table(builder, "Operator", **fields)


def _conv_size(size, kernel, stride, padding):
    return -(-size // stride) if padding == "same" else (size - kernel) // stride + 1


class Net:
    """A float network in NHWC, batch 1, described layer by layer; each method returns the name
    of its output tensor. Weights are float arrays in TFLite's layouts (CONV_2D OHWI,
    DEPTHWISE_CONV_2D 1HWO, FULLY_CONNECTED [out, in])."""

    def __init__(self, name, input_shape):
        self.name = name
        self.shapes = {"input": (1, *input_shape)}
        self.layers = []            # (kind, inputs, output, parameters)
        self.output_name = None

    def _add(self, kind, inputs, shape, **parameters):
        output = f"{kind}{len(self.layers)}"
        self.shapes[output] = tuple(shape)
        self.layers.append((kind, tuple(inputs), output, parameters))
        return output

    def conv(self, x, weights, bias, stride=1, padding="same", activation="relu", dilation=1):
        _, height, width, _ = self.shapes[x]
        if dilation != 1 and padding != "same":
            raise ValueError("the zoo writes dilated convolutions with SAME padding only")
        cout, kh, kw, _ = weights.shape
        shape = (1, _conv_size(height, kh, stride, padding), _conv_size(width, kw, stride, padding),
                 cout)
        return self._add("conv", [x], shape, weights=weights, bias=bias, stride=stride,
                         padding=padding, activation=activation, dilation=dilation)

    def depthwise(self, x, weights, bias, stride=1, padding="same", activation="relu6"):
        _, height, width, channels = self.shapes[x]
        _, kh, kw, cout = weights.shape
        shape = (1, _conv_size(height, kh, stride, padding), _conv_size(width, kw, stride, padding),
                 cout)
        return self._add("depthwise", [x], shape, weights=weights, bias=bias, stride=stride,
                         padding=padding, activation=activation, multiplier=cout // channels)

    def dense(self, x, weights, bias, activation=None, per_channel=False):
        return self._add("dense", [x], (1, weights.shape[0]), weights=weights, bias=bias,
                         activation=activation, per_channel=per_channel)

    def pool(self, x, kind, size=2, stride=2, padding="valid"):
        _, height, width, channels = self.shapes[x]
        shape = (1, _conv_size(height, size, stride, padding), _conv_size(width, size, stride,
                                                                           padding), channels)
        return self._add(kind, [x], shape, size=size, stride=stride, padding=padding)

    def mean(self, x):
        return self._add("mean", [x], (1, self.shapes[x][-1]))

    def add(self, a, b, activation=None):
        return self._add("add", [a, b], self.shapes[a], activation=activation)

    def reshape(self, x, shape):
        return self._add("reshape", [x], shape)

    def pad(self, x, pads):
        shape = [size + before + after for size, (before, after) in zip(self.shapes[x], pads)]
        return self._add("pad", [x], shape, pads=pads)

    def concat(self, tensors, axis=-1):
        shape = list(self.shapes[tensors[0]])
        shape[axis] = sum(self.shapes[t][axis] for t in tensors)
        return self._add("concat", tensors, shape, axis=axis % len(shape))

    def softmax(self, x):
        return self._add("softmax", [x], self.shapes[x])

    def tanh(self, x):
        """An op the importers do not support (for the error tests)."""
        return self._add("tanh", [x], self.shapes[x])

    def output(self, x):
        self.output_name = x

    # Writing ---------------------------------------------------------------------------------

    def tflite(self):
        """The float32 model."""
        writer = TFLiteWriter()
        writer.tensor("input", self.shapes["input"], np.float32)
        for kind, inputs, output, parameters in self.layers:
            writer.tensor(output, self.shapes[output], np.float32)
            _LAYERS[kind](writer, self, inputs, output, parameters, None)
        return writer.serialise(["input"], [self.output_name])

    def quantized_tflite(self, calibration, weight_quantization=None, activation_type=np.int8):
        """The full-integer model, activations quantized from their ranges on `calibration`
        (float inputs [N, *input_shape]); float in, float out. For the error tests,
        `weight_quantization` rewrites each weight tensor's (scales, zero points, axis) as
        stored and `activation_type` is the activations' declared type (values stay int8)."""
        quantization = _activation_quantization(self, _ranges(self, calibration))
        writer = TFLiteWriter()
        writer.weight_quantization = weight_quantization
        writer.tensor("input", self.shapes["input"], np.float32)
        writer.tensor("input_int8", self.shapes["input"], activation_type,
                      quantization=quantization["input"])
        writer.operator(tflite.BuiltinOperator.QUANTIZE, ["input"], ["input_int8"])
        names = {"input": "input_int8"}
        for kind, inputs, output, parameters in self.layers:
            writer.tensor(output, self.shapes[output], activation_type,
                          quantization=quantization[output])
            _LAYERS[kind](writer, self, [names.get(n, n) for n in inputs], output, parameters,
                          quantization)
        writer.tensor("output", self.shapes[self.output_name], np.float32)
        writer.operator(tflite.BuiltinOperator.DEQUANTIZE, [self.output_name], ["output"])
        return writer.serialise(["input"], ["output"])


def _ranges(net, calibration):
    """(min, max) of every activation of the float model over the calibration inputs."""
    float_model = net.tflite()
    interpreter = _interpreter(float_model)
    names = {detail["name"]: detail["index"] for detail in interpreter.get_tensor_details()}
    low, high = {}, {}
    for sample in calibration:
        values = _invoke(interpreter, sample[np.newaxis].astype(np.float32))
        for name in ["input"] + [layer[2] for layer in net.layers]:
            value = values[names[name]]
            low[name] = min(low.get(name, 0.0), float(value.min()))
            high[name] = max(high.get(name, 0.0), float(value.max()))
    return {name: (low[name], high[name]) for name in low}


def _activation_quantization(net, ranges):
    """int8 (scale, zero point) per activation, tied tensors sharing the union of ranges."""
    group = {name: name for name in ranges}

    def root(name):
        while group[name] != name:
            name = group[name]
        return name

    for kind, inputs, output, _ in net.layers:
        if kind in ("max_pool", "avg_pool", "reshape", "pad", "concat"):
            for tensor in inputs:
                group[root(tensor)] = root(output)
    union = {}
    for name, (low, high) in ranges.items():
        old = union.get(root(name), (0.0, 0.0))
        union[root(name)] = (min(old[0], low), max(old[1], high))
    quantization = {}
    for name in ranges:
        low, high = union[root(name)]
        scale = (high - low) / 255 if high > low else 1.0
        zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
        quantization[name] = ([np.float32(scale)], [zero_point], 0)
    for kind, _, output, _ in net.layers:
        if kind == "softmax":
            quantization[output] = ([np.float32(1 / 256)], [-128], 0)
    return quantization


def _weights(writer, name, weights, axis, per_channel):
    """Write `weights` as int8 symmetric, per channel along `axis` or per tensor; the scales."""
    moved = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
    peak = np.abs(moved).max(axis=1) if per_channel else np.full(1, np.abs(weights).max())
    scales = np.where(peak > 0, peak / 127, 1.0).astype(np.float32)
    shaped = scales.reshape([-1 if a == axis else 1 for a in range(weights.ndim)]) \
        if per_channel else scales[0]
    values = np.clip(np.round(weights / shaped), -127, 127).astype(np.int8)
    stored = (list(scales), [0] * len(scales), axis if per_channel else 0)
    if writer.weight_quantization is not None:
        stored = writer.weight_quantization(*stored)
    writer.tensor(name, weights.shape, np.int8, values, stored)
    return scales


def _parameters(writer, output, inputs, weights, bias, axis, per_channel, quantization):
    """Write the weight and bias tensors of a conv/dense layer; return their names."""
    names = [f"{output}_weights", f"{output}_bias"]
    if quantization is None:
        writer.tensor(names[0], weights.shape, np.float32, weights)
        writer.tensor(names[1], bias.shape, np.float32, bias)
        return names
    scales = _weights(writer, names[0], weights, axis, per_channel)
    bias_scales = (np.float64(quantization[_source(inputs[0])][0][0]) * scales).astype(np.float32)
    values = np.round(bias / bias_scales).astype(np.int32)
    writer.tensor(names[1], bias.shape, np.int32, values,
                  (list(bias_scales), [0] * len(bias_scales), 0))
    return names


def _source(name):
    return "input" if name == "input_int8" else name


def _write_conv(writer, net, inputs, output, parameters, quantization):
    names = _parameters(writer, output, inputs, parameters["weights"], parameters["bias"], 0, True,
                        quantization)
    stride = parameters["stride"]
    writer.operator(tflite.BuiltinOperator.CONV_2D, [inputs[0], *names], [output],
                    "Conv2DOptions", Padding=_PADDING[parameters["padding"]], StrideW=stride,
                    StrideH=stride, DilationWFactor=parameters["dilation"],
                    DilationHFactor=parameters["dilation"],
                    FusedActivationFunction=_ACTIVATION[parameters["activation"]])


def _write_depthwise(writer, net, inputs, output, parameters, quantization):
    names = _parameters(writer, output, inputs, parameters["weights"], parameters["bias"], 3, True,
                        quantization)
    stride = parameters["stride"]
    writer.operator(tflite.BuiltinOperator.DEPTHWISE_CONV_2D, [inputs[0], *names], [output],
                    "DepthwiseConv2DOptions", Padding=_PADDING[parameters["padding"]],
                    StrideW=stride, StrideH=stride, DepthMultiplier=parameters["multiplier"],
                    DilationWFactor=1, DilationHFactor=1,
                    FusedActivationFunction=_ACTIVATION[parameters["activation"]])


def _write_dense(writer, net, inputs, output, parameters, quantization):
    names = _parameters(writer, output, inputs, parameters["weights"], parameters["bias"], 0,
                        parameters["per_channel"], quantization)
    writer.operator(tflite.BuiltinOperator.FULLY_CONNECTED, [inputs[0], *names], [output],
                    "FullyConnectedOptions",
                    FusedActivationFunction=_ACTIVATION[parameters["activation"]])


def _write_pool(opcode):
    def write(writer, net, inputs, output, parameters, quantization):
        size, stride = parameters["size"], parameters["stride"]
        writer.operator(opcode, inputs, [output], "Pool2DOptions",
                        Padding=_PADDING[parameters["padding"]], StrideW=stride, StrideH=stride,
                        FilterWidth=size, FilterHeight=size)
    return write


def _write_mean(writer, net, inputs, output, parameters, quantization):
    writer.tensor(f"{output}_axes", (2,), np.int32, np.array([1, 2]))
    writer.operator(tflite.BuiltinOperator.MEAN, [inputs[0], f"{output}_axes"], [output],
                    "ReducerOptions", KeepDims=False)


def _write_add(writer, net, inputs, output, parameters, quantization):
    writer.operator(tflite.BuiltinOperator.ADD, inputs, [output], "AddOptions",
                    FusedActivationFunction=_ACTIVATION[parameters["activation"]])


def _write_reshape(writer, net, inputs, output, parameters, quantization):
    shape = net.shapes[output]
    writer.tensor(f"{output}_shape", (len(shape),), np.int32, np.array(shape))
    writer.operator(tflite.BuiltinOperator.RESHAPE, [inputs[0], f"{output}_shape"], [output])


def _write_pad(writer, net, inputs, output, parameters, quantization):
    writer.tensor(f"{output}_pads", (4, 2), np.int32, np.array(parameters["pads"]))
    writer.operator(tflite.BuiltinOperator.PAD, [inputs[0], f"{output}_pads"], [output])


def _write_concat(writer, net, inputs, output, parameters, quantization):
    writer.operator(tflite.BuiltinOperator.CONCATENATION, inputs, [output],
                    "ConcatenationOptions", Axis=parameters["axis"])


def _write_softmax(writer, net, inputs, output, parameters, quantization):
    writer.operator(tflite.BuiltinOperator.SOFTMAX, inputs, [output], "SoftmaxOptions", Beta=1.0)


def _write_tanh(writer, net, inputs, output, parameters, quantization):
    writer.operator(tflite.BuiltinOperator.TANH, inputs, [output])


_LAYERS = {"tanh": _write_tanh, "conv": _write_conv, "depthwise": _write_depthwise,
           "dense": _write_dense,
           "max_pool": _write_pool(tflite.BuiltinOperator.MAX_POOL_2D),
           "avg_pool": _write_pool(tflite.BuiltinOperator.AVERAGE_POOL_2D),
           "mean": _write_mean, "add": _write_add, "reshape": _write_reshape, "pad": _write_pad,
           "concat": _write_concat, "softmax": _write_softmax}


# Running in LiteRT -------------------------------------------------------------------------------

def _interpreter(model_bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    interpreter = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _invoke(interpreter, x):
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        try:
            values[detail["index"]] = interpreter.get_tensor(detail["index"])
        except ValueError:      # a tensor without data (an optional input left out)
            continue
    return values


def run_litert(model_bytes, x):
    """Run a model in LiteRT's reference kernels (BUILTIN_REF) on one float input [1, ...];
    return every tensor's value by tensor name."""
    interpreter = _interpreter(model_bytes)
    values = _invoke(interpreter, np.asarray(x, np.float32))
    return {detail["name"]: values[detail["index"]].copy()
            for detail in interpreter.get_tensor_details() if detail["index"] in values}


# The zoo -----------------------------------------------------------------------------------------

def _conv_weights(rng, cout, kh, kw, cin):
    return (rng.standard_normal((cout, kh, kw, cin)) / np.sqrt(kh * kw * cin)).astype(np.float32)


def _bias(rng, n):
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def digits_cnn(rng):
    """8x8x1 input, conv3x3(8) + ReLU, 2x2 max-pool, dense 10 (the digits demo's shape)."""
    net = Net("digits_cnn", (8, 8, 1))
    x = net.conv("input", _conv_weights(rng, 8, 3, 3, 1), _bias(rng, 8))
    x = net.pool(x, "max_pool")
    x = net.reshape(x, (1, 4 * 4 * 8))
    net.output(net.dense(x, (rng.standard_normal((10, 128)) / 11).astype(np.float32),
                         _bias(rng, 10)))
    return net


def residual_block(rng):
    """conv3x3 + ReLU, conv3x3, ADD with the block input, ReLU fused in the ADD."""
    net = Net("residual_block", (6, 6, 4))
    stem = net.conv("input", _conv_weights(rng, 8, 1, 1, 4), _bias(rng, 8))
    x = net.conv(stem, _conv_weights(rng, 8, 3, 3, 8), _bias(rng, 8))
    x = net.conv(x, _conv_weights(rng, 8, 3, 3, 8), _bias(rng, 8), activation=None)
    net.output(net.add(x, stem, activation="relu"))
    return net


def cifar_cnn(rng):
    """32x32x3 input: conv3x3(16) stride 2, explicit PAD + VALID conv3x3(32), 2x2 average
    pool, conv1x1 RELU6, 2x2 max pool, dense 64 RELU (per-channel) reading the 4-D tensor,
    dense 10, SOFTMAX."""
    net = Net("cifar_cnn", (32, 32, 3))
    x = net.conv("input", _conv_weights(rng, 16, 3, 3, 3), _bias(rng, 16), stride=2)
    x = net.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = net.conv(x, _conv_weights(rng, 32, 3, 3, 16), _bias(rng, 32), padding="valid")
    x = net.pool(x, "avg_pool")
    x = net.conv(x, _conv_weights(rng, 32, 1, 1, 32), _bias(rng, 32), activation="relu6")
    x = net.pool(x, "max_pool")
    x = net.dense(x, (rng.standard_normal((64, 512)) / 22).astype(np.float32), _bias(rng, 64),
                  activation="relu", per_channel=True)          # FULLY_CONNECTED flattens
    x = net.dense(x, (rng.standard_normal((10, 64)) / 8).astype(np.float32), _bias(rng, 10))
    net.output(net.softmax(x))
    return net


def mobilenet_block(rng):
    """Depthwise-separable blocks (depthwise 3x3 RELU6 + pointwise 1x1 RELU6, the second block
    strided with depth multiplier 2), a concatenation of two branches, MEAN and a classifier."""
    net = Net("mobilenet_block", (12, 12, 8))
    depthwise = (rng.standard_normal((1, 3, 3, 8)) / 3).astype(np.float32)
    x = net.depthwise("input", depthwise, _bias(rng, 8))
    x = net.conv(x, _conv_weights(rng, 16, 1, 1, 8), _bias(rng, 16), activation="relu6")
    y = net.depthwise(x, (rng.standard_normal((1, 3, 3, 32)) / 3).astype(np.float32),
                      _bias(rng, 32), stride=2)
    y = net.conv(y, _conv_weights(rng, 16, 1, 1, 32), _bias(rng, 16), activation="relu6")
    z = net.pool(x, "max_pool", size=3, stride=2, padding="same")
    x = net.concat([y, z])
    x = net.mean(x)
    net.output(net.dense(x, (rng.standard_normal((10, 32)) / 6).astype(np.float32),
                         _bias(rng, 10)))
    return net


ZOO = {"digits_cnn": digits_cnn, "residual_block": residual_block, "cifar_cnn": cifar_cnn,
       "mobilenet_block": mobilenet_block}
