"""Train the t2v demo transformer (see training.dit).

    nice -n 10 python -m training.train_t2v --expert high --latents LATENTS.pt --text TEXT_DIR --out OUT
"""

from .dit import main

EXPERTS = ("high", "low")

if __name__ == "__main__":
    main("t2v", 0.875, EXPERTS)
