"""Train the ti2v demo transformer (see training.dit).

    nice -n 10 python -m training.train_ti2v --expert all --latents LATENTS.pt --text TEXT_DIR --out OUT
"""

from .dit import main

EXPERTS = ("all",)

if __name__ == "__main__":
    main("ti2v", None, EXPERTS)
