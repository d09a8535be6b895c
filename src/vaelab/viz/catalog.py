"""Every picture vaelab draws: its kind, the file it is written to, and its caption.

One table, read by ``figures`` (which file a kind goes to), the report (the caption under
each picture) and ``vaelab plot --what`` (the kinds it accepts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Picture:
    filename: str
    caption: str


# kinds `vaelab plot` can draw, in the order a report shows them
PICTURES: dict[str, Picture] = {
    "scatter": Picture("scatter.png", "Approximate posterior: q(z|x) means of test points, "
                                      "coloured by label."),
    "animation": Picture("animation.gif", "The approximate posterior during training (one "
                                          "frame per snapshot)."),
    "grid": Picture("prior-grid.png", "Prior predictive: E[x|z] decoded on a grid over the "
                                      "latent plane."),
    "interpolation": Picture("interpolation.png", "Decoded paths between the codes of two "
                                                  "test images."),
    "samples": Picture("samples.png", "Samples: E[x|z] with z drawn from the prior."),
    "reconstructions": Picture("reconstructions.png", "Test images and their "
                                                      "reconstructions."),
    "curves": Picture("curves.png", "Training curves per epoch."),
    "kl": Picture("kl-per-dimension.png", "KL(q||p) split over latent dimensions."),
    "sweep": Picture("class-sweep.png", "Categorical latent: each class of each variable "
                                        "decoded."),
    "layers": Picture("layer-samples.png", "Hierarchical: each row holds the top layer z_L "
                                           "fixed and resamples the layers below (what the "
                                           "lower layers add)."),
    "classes": Picture("class-grid.png", "Conditional: samples under each label, one row "
                                         "per class."),
    "kl_layers": Picture("kl-per-layer.png", "Hierarchical: KL(q||p) of each latent layer per "
                                             "epoch (and active units per layer, where "
                                             "validated)."),
    "relabel": Picture("relabel.png", "Conditional: test images (left column) and each "
                                      "one's code decoded under every label."),
}
# pictures drawn by other steps (end of training for 2-D latents, `vaelab gap`)
OTHER_PICTURES: dict[str, Picture] = {
    "latent-prior": Picture("latent-prior.png", "Posterior means of test points in the 2-D "
                                                "latent space, with the prior's components "
                                                "as 2-sigma ellipses."),
    "gap": Picture("gap.png", "ELBO during black-box VI from the encoder and from the prior: "
                              "the amortization gap."),
}
FILENAMES = {kind: p.filename for kind, p in PICTURES.items()}
CAPTIONS = {p.filename: p.caption for p in (*PICTURES.values(), *OTHER_PICTURES.values())}
