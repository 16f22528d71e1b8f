"""Image-quality metrics and the networks behind the perceptual ones.

    from kdsr.metrics import psnr, ssim                # BasicSR / MATLAB conventions (psnr_ssim.py)
    from kdsr.metrics.lpips_net import LPIPS           # lpips's heads on a torchvision backbone file
    from kdsr.metrics.stlpips_net import STLPIPSVGG16  # ST-LPIPS: a metric and an offline perceptual loss

``backbones.py`` builds the VGG / AlexNet feature stacks in torchvision's layout that LPIPS, ST-LPIPS and the
VGG19 perceptual loss (kdsr.training.perceptual) load. Only PSNR/SSIM are imported with the package; the
networks load their weight files on construction.
"""

from .psnr_ssim import psnr, quantize_8bit, rgb_to_y, ssim

__all__ = ["psnr", "ssim", "rgb_to_y", "quantize_8bit"]
