"""Published mean TREs on DIR-Lab 4DCT (mm), shown as labelled reference lines.

They come from the seed papers' own tables (300 landmarks per case, T00 fixed, T50 moving);
the papers' protocols differ in details (rounding, masks), so they are references, not
results of this harness.
"""

PUBLISHED_DIRLAB = {
    "mlVIRNet (Hering 2019, published)": 2.19,
    "Hering et al. 2021 (published)": 1.14,
    "Eppenhof 2020 (published)": 2.43,
    "de Vos 2019 (published)": 2.64,
}

PUBLISHED = {"dirlab": PUBLISHED_DIRLAB}  # benchmark name -> references; none for the others
