"""ONNX files through ``torch.onnx.export`` (its default dynamo exporter: a ``torch.export``
program translated to ONNX) and their check in onnxruntime against PyTorch."""
import torch

from .export import dynamic_shapes, example_input, max_abs_diff


def export_onnx(module, shape, path, divisor=None, opset=None):
    """Write ``module`` on a (B, 3, H, W) input as an ONNX file.

    Args:
        module (nn.Module): e.g. from :func:`build_deployable`.
        shape (tuple): (H, W) of the example input.
        path (str): The file to write.
        divisor (tuple, optional): ``(div_h, div_w)``: B is dynamic and H and W are,
            multiples of it; None: the graph has the fixed size (1, 3, *shape).
        opset (int, optional): ONNX opset; the exporter's default if None.
    """
    with torch.no_grad():  # an inference graph, as export_program
        program = torch.onnx.export(
            module, (example_input(shape, divisor), ), dynamo=True, input_names=['inputs'],
            opset_version=opset, dynamic_shapes=dynamic_shapes(divisor) if divisor else None)
    program.save(path)
    return path


def verify_onnx(module, path, sizes, batch=1, seed=0):
    """Run the file in onnxruntime and ``module`` in PyTorch on the same random inputs of
    ``batch`` images.

    Returns:
        list: ``(size, max_abs_diff, error)`` per (H, W) of ``sizes``; when onnxruntime fails
        (e.g. a shape frozen at the export size), the difference is ``inf`` and ``error`` its
        message, else ``error`` is None.
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    results = []
    for size in sizes:
        inputs = torch.randn(batch, 3, *size, generator=generator)
        with torch.no_grad():
            expected = module(inputs)
        try:
            outputs = [torch.from_numpy(o) for o in session.run(None, {name: inputs.numpy()})]
        except Exception as err:  # onnxruntime's errors share no base class but Exception
            results.append((tuple(size), float('inf'), str(err).splitlines()[0]))
            continue
        results.append((tuple(size), max_abs_diff(outputs, expected), None))
    return results
