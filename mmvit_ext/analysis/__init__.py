"""Measuring models, for the tools under ``tools/analysis_tools``: FLOPs
(:mod:`.flops`) and latency, throughput and peak memory of interleaved runs
(:mod:`.benchmarking`)."""
from .benchmarking import (CpuPeakMemory, CudaPeakMemory, Runner, TrainRunner,
                           WholeModelRunner, benchmark, benchmark_cases, max_abs_diff)
from .flops import count_flops, count_params, flop_analyzer

__all__ = ['CpuPeakMemory', 'CudaPeakMemory', 'Runner', 'TrainRunner', 'WholeModelRunner',
           'benchmark', 'benchmark_cases', 'count_flops', 'count_params', 'flop_analyzer',
           'max_abs_diff']
