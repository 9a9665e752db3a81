#!/usr/bin/env python3
"""Peer measurement for `voicecare bench asr`: faster-whisper (CTranslate2) on
the same weights and the same 16 kHz audio, decoded the same way.

Reads a JSON job on stdin: {"model_dir", "threads", "compute_type", "beam_size",
"clips": [{"id", "pcm", "lang", "prompt"}]} where pcm is a file of raw
little-endian float32 samples at 16 kHz. Writes one JSON line per clip
({"id", "text", "decode_s"}) and a last line {"peak_rss_mb"}.
"""
import json
import resource
import sys
import time

import numpy as np
from faster_whisper import WhisperModel

job = json.load(sys.stdin)
model = WhisperModel(job["model_dir"], device="cpu", compute_type=job.get("compute_type", "float32"),
                     cpu_threads=job["threads"], num_workers=1)
for clip in job["clips"]:
    audio = np.fromfile(clip["pcm"], dtype="<f4")
    start = time.perf_counter()
    segments, _ = model.transcribe(
        audio,
        language=clip["lang"],
        beam_size=job.get("beam_size", 1),
        best_of=1,
        temperature=0.0,
        condition_on_previous_text=False,
        initial_prompt=clip.get("prompt"),
        vad_filter=False,
        without_timestamps=False,
    )
    text = "".join(s.text for s in segments).strip()
    decode_s = time.perf_counter() - start
    print(json.dumps({"id": clip["id"], "text": text, "decode_s": decode_s}, ensure_ascii=False), flush=True)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}), flush=True)
