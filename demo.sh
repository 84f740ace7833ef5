#!/bin/sh
# `make demo`: enrol the two people of the Hamilton clip, recognise them in it, print the summary.
# Outputs: out/demo/annotated.mp4, out/demo/events.jsonl, out/demo/summary.json, out/demo/config.resolved.yaml.
set -eu
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/ageitgey_face_recognition_examples}
OUT=out/demo
GALLERY=demo

if [ ! -d "$DATA" ]; then
    cat <<HELP
The demo's clip and reference photos come from $DATA, which this machine does not have,
so there is no demo to run here. To recognise your own people:

  1. Enrol them, one folder of photos per person (the folder name is the person's name):
       $PY enroll.py --gallery $GALLERY add --tree PATH/TO/PEOPLE
     or one person at a time:
       $PY enroll.py --gallery $GALLERY add --name "Ada Lovelace" ada1.jpg ada2.jpg

  2. Point run.py at a camera, a stream or a file:
       $PY run.py --gallery $GALLERY --source 0                                  # webcam 0
       $PY run.py --gallery $GALLERY --source rtsp://USER:PASS@HOST:554/stream   # RTSP/HTTP stream
       $PY run.py --gallery $GALLERY --source clip.mp4 --output-video $OUT/annotated.mp4 --events $OUT/events.jsonl

Redis: the embedded server under state/ is started on first use; --redis-url redis://HOST:6379 uses yours.
HELP
    exit 0
fi

mkdir -p "$OUT"
rm -f "$OUT/events.jsonl"  # the events file is appended to: start the demo's log afresh
# Start from an empty demo gallery: a gallery is bound to the model that made its templates, so a demo
# gallery left by an older model would refuse today's enrolments.
for name in "Lin-Manuel Miranda" "Alex Lacamoire"; do
    $PY enroll.py --gallery $GALLERY remove "$name" >/dev/null 2>&1 || true
done
$PY enroll.py --gallery $GALLERY add --name "Lin-Manuel Miranda" "$DATA/reference_photos/lin-manuel-miranda.png"
$PY enroll.py --gallery $GALLERY add --name "Alex Lacamoire" "$DATA/reference_photos/alex-lacamoire.png"
$PY run.py --config configs/demo.yaml --gallery $GALLERY --source "$DATA/video/short_hamilton_clip.mp4" \
    --output-video "$OUT/annotated.mp4" --events "$OUT/events.jsonl" --summary-json "$OUT/summary.json"
