from .aux_loss import BackboneAuxLossMixin, with_backbone_aux_loss

__all__ = ['BackboneAuxLossMixin', 'with_backbone_aux_loss']
