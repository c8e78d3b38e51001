# Sourced by the lent-GPU scripts (bench/device_session.sh, bench/device_tables.sh): the Python environment of a bare
# CUDA machine whose python3 holds torch. gumalign's missing wheels in .whl/ (mrcfile, starfile, gemmi, dynamotable,
# ...; fetch them here first with `pip download --no-deps -d .whl mrcfile starfile gemmi dynamotable ...`) are installed
# to /tmp/site; `gumalign` becomes /tmp/gumalign. Sets PY, LOGS (created) and exports PYTHONPATH.
if [[ -d .whl && -z ${NO_WHEELS:-} ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/src
else
    export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
printf '#!/bin/sh\nexec %s -m gumalign.cli.main "$@"\n' "$PY" > /tmp/gumalign && chmod +x /tmp/gumalign
mkdir -p "$LOGS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOGS/gpu.txt" 2>&1
"$PY" -c "import torch, gumalign; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
    > "$LOGS/smoke.txt" 2>&1
cat "$LOGS/gpu.txt" "$LOGS/smoke.txt"
nproc >> "$LOGS/gpu.txt"
