#!/bin/sh
# Sound from Debian's own kernel (issue 13, item 6): Linux's snd-ens1370 drives our ES1370;
# amixer opens the AK4531's Master and PCM outputs (Linux leaves them muted) and `aplay`
# (alsa-utils, in the guest) plays a 1 s 440 Hz tone to hw:0,0; the VMM plays it into a private
# PulseAudio server's null sink, whose monitor parec records. The recording must hold
# 440 Hz +- 2% and 1 s of tone +- 10% (moments where the box fell behind are counted apart).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup snd
# The tone, made here (the same bytes every run, so the cached fixture holds): 44.1 kHz, 16-bit
# stereo, half scale.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vmws/fixtures
mkdir -p "$cache" || exit 99
tone=$cache/tone-440.wav
/usr/bin/python3 - "$tone" <<'PY' || exit 99
import math, struct, sys, wave
w = wave.open(sys.argv[1] + ".tmp", "wb")
w.setnchannels(2); w.setsampwidth(2); w.setframerate(44100)
w.writeframes(b"".join(struct.pack("<hh", v, v) for v in
                       (int(16383 * math.sin(2 * math.pi * 440 * i / 44100)) for i in range(44100))))
w.close()
import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
PY
linux_fixture shell-init.sh virtio_pci,virtio_blk,snd_ens1370 aplay,amixer \
    "/usr/share/alsa/alsa.conf,/usr/share/alsa/cards,/usr/share/alsa/ctl,/usr/share/alsa/pcm,$tone"
# A private PulseAudio with a null sink, as tests/e2e/test_audio.c starts it.
pulse=$VMWS_HOME/pulse
mkdir -p "$pulse/rt"
HOME=$pulse PULSE_RUNTIME_PATH=$pulse/rt pulseaudio --daemonize=no --exit-idle-time=-1 -n \
    --disallow-exit --disable-shm --log-target="file:$pulse/pulse.log" \
    --load="module-null-sink sink_name=vmws_test rate=44100" \
    --load="module-native-protocol-unix socket=$pulse/native auth-anonymous=1" &
pa=$!
trap 'kill $pa $rec 2>/dev/null; "$vmws" kill snd >/dev/null 2>&1; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
rec=
export PULSE_SERVER=unix:$pulse/native
for i in $(seq 1 100); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
pactl info >/dev/null 2>&1 || { echo "pulseaudio did not answer"; cat "$pulse/pulse.log"; exit 99; }
cpus=1 # (test_linux_devices.sh boots two: in the box's one CPU a second vCPU only slows Linux)
"$vmws" create snd --memory 256M --cpus "$cpus" --disk 16M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console" >/dev/null || exit 99
"$vmws" start snd --display none >/dev/null || exit 99
log=$VMWS_HOME/snd/serial.log
check "Linux booted" ready 1
check "snd-ens1370 made a sound card" guest "grep -q ENS1370 /proc/asound/cards"
# Linux leaves the AK4531 codec's outputs muted (a distribution's alsactl init opens them): as a
# user would, unmute the master and PCM outputs.
guest "amixer -D hw:0 scontrols"
check "amixer unmuted Master and PCM" \
    guest "amixer -q -D hw:0 sset Master 80% unmute && amixer -q -D hw:0 sset PCM 80% unmute"
raw=$VMWS_HOME/rec.raw
parec -d vmws_test.monitor --raw --format=s16le --rate=44100 --channels=1 --latency-msec=10 >"$raw" &
rec=$!
for i in $(seq 1 50); do [ "$(stat -c %s "$raw")" -ge 4410 ] && break; sleep 0.1; done
check "aplay played the tone to hw:0,0" guest "aplay -q -D hw:0,0 $tone"
sleep 1
kill $rec
wait $rec 2>/dev/null
heard=$(/usr/bin/python3 - "$raw" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
s = struct.unpack("<%dh" % (len(d) // 2), d[: len(d) // 2 * 2])
peak = max((abs(v) for v in s), default=0)
on = [i for i, v in enumerate(s) if abs(v) > peak / 4] if peak > 1000 else []
if not on:
    print("silence 0 0 0"); sys.exit()
a, b = on[0], on[-1]
# The tone's periods, between rising zero crossings: the pitch from their mean, the length from
# their sum - what was played, without the gaps where the box's emulated guest fell behind for
# a moment (printed apart).
up = [i for i in range(a + 1, b) if s[i - 1] < 0 <= s[i]]
periods = sorted(q - p for p, q in zip(up, up[1:]))
med = periods[len(periods) // 2] if periods else 0
near = [q for q in periods if abs(q - med) <= med / 5]
hz = 44100 * len(near) / sum(near) if near else 0
print("tone %.1f %.3f gaps %.3f" % (hz, sum(near) / 44100, (b - a - sum(near)) / 44100))
PY
)
echo "recorded: $heard (Hz, seconds of tone, seconds of gaps) in $(stat -c %s "$raw") bytes"
set -- $heard
check "the recording is 440 Hz +- 2% (heard $2 Hz)" \
    /usr/bin/python3 -c "import sys; sys.exit(not abs($2 - 440) <= 8.8)"
check "the tone lasts 1 s +- 10% (heard $3 s)" \
    /usr/bin/python3 -c "import sys; sys.exit(not abs($3 - 1) <= 0.1)"
echo "---- the guest's console (without the kernel's lines)"
grep -v "^\[" "$log" | tail -n 40
grep -i "ens1370\|snd\|alsa" "$log" | head -20
echo "---- vmm.log"
tail -n 20 "$VMWS_HOME/snd/vmm.log"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
