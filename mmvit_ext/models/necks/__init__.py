from .norm_pool_neck import NormPoolNeck

__all__ = ['NormPoolNeck']
