#!/usr/bin/env bash
# GPU call zzg, second part: the compiled-artifact tests again with CHEEMS_BIN set (call.sh left it unset, so the one
# test that runs the cheems binary did not find it).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
CHEEMS_CUDA_POISON=1 timeout 150 $(ls .gpu/tests/artifact-*) --test-threads=2 > $L/tests_artifact2.txt 2>&1
echo "artifact rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_artifact2.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
