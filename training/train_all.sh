#!/usr/bin/env bash
# Train every demo model from scratch and assemble weights/demo/, as the committed folders were
# made: two lanes of single-threaded jobs, one per CPU core. Deterministic (fixed seeds); the
# --minutes caps are safety nets that the step counts stay under on 2 idle cores.
#
#     bash training/train_all.sh [WORK_DIR]        # default /tmp/demo; about 2 h 20 min
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-/tmp/demo}
mkdir -p "$D/logs"
run() { local name=$1; shift; echo "$(date +%T) start $name"; python -m "$@" > "$D/logs/$name.log" 2>&1
        echo "$(date +%T) done  $name"; }

# The high-noise experts and TI2V weight the loss towards the subject (--subject-weight): they decide
# the layout, and unweighted they left the subject out. The low-noise experts see it in their input.
lane_wan21() {  # the Wan2.1-style VAE, its latents, the text-to-video experts' high-noise side
  # 8400 image steps, not 4200 (27.9 dB against 26.9); the video phase on 48-pixel crops, where a
  # step costs half as much, keeps the run under an hour beside the other lane; 200 steps on the
  # decoder alone then add 0.24 dB (28.17) without touching the encoder, so latents stay as they were
  # (51.4 min in all beside the other lane)
  run vae21 training.train_vae --kind wan21 --image-steps 8400 --video-steps 400 --batch 4 --crop 64 \
      --video-crop 48 --image-lr 1e-3 --video-lr 2e-4 --decoder-steps 200 --decoder-lr 5e-5 \
      --minutes 60 --log-every 100 --out "$D/vae_wan21"
  run lat16 training.cache_latents --vae "$D/vae_wan21" --count 2400 --i2v --out "$D/lat16.pt"
  # learning rates 8x and 4x the first probe's 6e-4: at 6e-4 sampled pans stood still (left vs right
  # 10/32); one model on left-pan clips alone sampled pans of +0.21, +0.21 and +0.74 px a frame after 16
  # minutes at 6e-4, 1.2e-3 and 2.4e-3 (latent_dx; the world +1.19). All four A14B experts have 5 heads
  # (width 160), not 4: the I2V patch is 2x2 of 36 channels, 144 numbers, more than width 128 carries;
  # T2V push/pull 19 -> 23, composition 23 -> 27, prompt colour 25 -> 28 (6 heads: 26, 26, 28, but
  # four 6-head experts do not fit the 40 MB); 33.0 and 17.8 min beside the other lane
  run t2v_high training.train_t2v --expert high --latents "$D/lat16.pt" --text "$D/text" \
      --steps 5000 --batch 32 --lr 4.8e-3 --subject-weight 4 --heads 5 --minutes 55 --out "$D/t2v_high"
  # the I2V experts at 2.4e-3, not 3e-4 (at 4 heads): image pan 19 -> 21/32 (effect doubled), subject motion
  # 19 -> 22; at 5 heads 21 and 17 (seed 1: 23 and 20); with the low-noise one started from the
  # new T2V low-noise expert 29 and 20 (clip-aware detector); 5.6 min each beside the other lane
  run i2v_high training.train_i2v --expert high --init "$D/t2v_high" --latents "$D/lat16.pt" \
      --text "$D/text" --steps 900 --batch 32 --lr 2.4e-3 --subject-weight 4 --heads 5 \
      --minutes 25 --out "$D/i2v_high"
}

lane_wan22() {  # the Wan2.2-style VAE and TI2V, then the low-noise experts
  # 10000 image steps, not 5000: at 5000 the VAE reached 27.2 dB and stilled pans (0.16 px a frame
  # against the world's 1.2), so TI2V never saw a latent that pans
  run vae22 training.train_vae --kind wan22 --image-steps 10000 --video-steps 600 --batch 4 --crop 64 \
      --image-lr 1e-3 --video-lr 2e-4 --minutes 45 --log-every 100 --out "$D/vae_wan22"
  run lat48 training.cache_latents --vae "$D/vae_wan22" --count 3000 --out "$D/lat48.pt"
  # 4.8e-3 as the T2V high-noise expert, not 6e-4: composition 15 -> 26/32, prompt colour 29 -> 32,
  # push/pull 19 -> 22 (2.4e-3: 25, 32, 19). 8 heads (width 256) and ffn 1024, not 4 and 512: a
  # 2x2 patch of 48 channels is 192 numbers, more than a width of 128 carries; final loss 0.71 -> 0.25,
  # push/pull 22 -> 28, composition 26 -> 30 (6 heads: 18 and 29-30). 5000 steps, not 4000 (on the taught
  # text encoder): pan 27 -> 28/32, image pan 24 -> 29, image subject motion 26 -> 27 (over 64 seeds 58, 59
  # and 58/64; a motion loss or more subject weight moved these by the seeds' spread); 48.3 min beside the
  # other lane
  run ti2v training.train_ti2v --latents "$D/lat48.pt" --text "$D/text" \
      --steps 5000 --batch 64 --lr 4.8e-3 --subject-weight 4 --heads 8 --ffn 1024 --minutes 58 --out "$D/ti2v"
  # the low-noise expert starts from the high-noise one, as both Wan2.2 experts start from one model:
  # from scratch it ignored the camera words and, taking over at the boundary, undid the pan the
  # high-noise expert had laid out (sampled latents +0.43 / -0.63 px a frame for pan left / right, 21/32
  # pairs right; from the high-noise expert +0.84 / -1.07, 30/32; the world +-1.19). 5000 steps, not
  # 2500: pan 25 -> 31/32, prompt colour 28 -> 30 (benchmarks/bench_handoff.py, docs/benchmarks.md);
  # 31.0 min beside the other lane
  while [ ! -f "$D/t2v_high/train_log.txt" ]; do sleep 10; done
  run t2v_low training.train_t2v --expert low --init "$D/t2v_high" --latents "$D/lat16.pt" \
      --text "$D/text" --steps 5000 --batch 32 --lr 2.4e-3 --heads 5 --minutes 55 --out "$D/t2v_low"
  run i2v_low training.train_i2v --expert low --init "$D/t2v_low" --latents "$D/lat16.pt" \
      --text "$D/text" --steps 900 --batch 32 --lr 2.4e-3 --heads 5 --minutes 25 --out "$D/i2v_low"
}

# the text encoder is taught for 600 steps which phrase each token belongs to (half a minute): a random
# one is a bag of words ("left" in "pan left" and in "it moves to the left" at cosine 0.9995), to which
# "pan left, it moves to the right" and "pan right, it moves to the left" are one prompt. Every
# transformer retrained on the taught one, recipes unchanged: TI2V (4000 steps) pan 10 -> 27/32, image
# pan 14 -> 24, image subject motion 11 -> 26; I2V subject motion 20 -> 29, image pan 29 -> 30; T2V pan
# 31 -> 32
run text training.train_text --phrase-steps 600 --out "$D/text"
lane_wan21 & a=$!
lane_wan22 & b=$!
wait $a
wait $b
for variant in t2v-a14b i2v-a14b ti2v-5b; do
  case $variant in
    t2v-a14b) args=(--vae "$D/vae_wan21" --transformer "$D/t2v_high" --transformer-2 "$D/t2v_low") ;;
    i2v-a14b) args=(--vae "$D/vae_wan21" --transformer "$D/i2v_high" --transformer-2 "$D/i2v_low") ;;
    ti2v-5b) args=(--vae "$D/vae_wan22" --transformer "$D/ti2v") ;;
  esac
  python -m training.assemble --variant "$variant" --text "$D/text" "${args[@]}" --out "weights/demo/$variant"
done
