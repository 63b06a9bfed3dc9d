from .demo import DEMO_CLASSES, generate_demo_datasets

__all__ = ['DEMO_CLASSES', 'generate_demo_datasets']
