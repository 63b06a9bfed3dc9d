"""Exporting the models: ``torch.export`` programs and ONNX files, with dynamic H and W."""
from .export import (SizeConstraintError, build_deployable, check_size, dynamic_shapes,
                     export_program, max_abs_diff, other_size)
from .onnx import export_onnx, verify_onnx

__all__ = ['SizeConstraintError', 'build_deployable', 'check_size', 'dynamic_shapes',
           'export_program', 'export_onnx', 'max_abs_diff', 'other_size', 'verify_onnx']
