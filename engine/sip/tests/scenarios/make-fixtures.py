#!/usr/bin/env python3
"""Build the RTP fixtures the SIPp scenarios play (pcap files, all 127.0.0.1).

  greeting-pcmu.pcap   Mandarin greeting, G.711 mu-law, PT 0, 20 ms packets
  greeting-pcma.pcap   same, G.711 A-law, PT 8
  announce-off.pcap    carrier-style announcement "您拨打的电话已关机" (A-law, PT 8)
  announce-off-gcin.pcap  "您拨打的电话已关机" in a recorded human voice (gcin-voice syllables,
                       from audio-fixtures/carrier), after the network's 450 Hz tone (A-law, PT 8)
  hello-pcma.pcap      a person picking up: "喂？" and silence (A-law, PT 8)
  dtmf-1.pcap          RFC 4733 telephone-event digit 1, PT 101, continues the greeting's SSRC/sequence
  dtmf-5.pcap          RFC 4733 telephone-event digit 5, PT 101, own SSRC (sent by the caller stand-in)
  greeting-pcmu.raw    headerless mu-law 8 kHz (for sipp rtp_stream / tests)
  greeting.wav         16-bit 8 kHz mono WAV (for baresip aufile)

Needs espeak-ng (Debian) and Python 3.11 (audioop). Run: python3 make-fixtures.py
Writes next to this script.
"""
import audioop, io, os, struct, subprocess, wave, math
os.chdir(os.path.dirname(os.path.abspath(__file__)))

def tts(text, voice="cmn", rate=150):
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                         check=True, capture_output=True).stdout
    w = wave.open(io.BytesIO(wav))
    pcm = w.readframes(w.getnframes())
    pcm, _ = audioop.ratecv(pcm, 2, 1, w.getframerate(), 8000, None)
    return pcm  # 16-bit LE, 8 kHz mono

def tone(freq, ms, amp=8000):
    n = 8 * ms
    return b"".join(struct.pack("<h", int(amp * math.sin(2 * math.pi * freq * i / 8000))) for i in range(n))

def silence(ms):
    return b"\x00\x00" * 8 * ms

def udp_ip(payload, sport, dport):
    src = dst = bytes([127, 0, 0, 1])
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16); s = (s & 0xFFFF) + (s >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]
    return hdr + udp

def write_pcap(path, packets):  # packets: [(t_seconds, rtp_bytes)]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        for t, rtp in packets:
            pkt = bytes(6) + bytes(6) + b"\x08\x00" + udp_ip(rtp, 40000, 6000)  # zero MACs, IPv4
            sec = int(t); usec = int(round((t - sec) * 1e6))
            f.write(struct.pack("<IIII", 1_000_000_000 + sec, usec, len(pkt), len(pkt)))
            f.write(pkt)

def rtp(pt, seq, ts, ssrc, payload, marker=False):
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload

def g711_pcap(path, pcm, law, pt, ssrc):
    enc = audioop.lin2ulaw(pcm, 2) if law == "u" else audioop.lin2alaw(pcm, 2)
    pkts = []
    for i in range(0, len(enc) - 159, 160):
        n = i // 160
        pkts.append((n * 0.02, rtp(pt, n, n * 160, ssrc, enc[i:i + 160], marker=(n == 0))))
    write_pcap(path, pkts)
    return enc

def dtmf_pcap(path, digit, ssrc, duration_ms=200, seq0=0, ts0=0):
    """seq0/ts0 let the event continue an audio stream of the same SSRC, as a real sender does."""
    ev = "0123456789*#ABCD".index(digit)
    pkts, seq = [], seq0
    steps = duration_ms // 20
    for k in range(1, steps + 1):       # updates every 20 ms, same timestamp (RFC 4733 2.5.1)
        pkts.append((k * 0.02, rtp(101, seq, ts0, ssrc, struct.pack("!BBH", ev, 10, k * 160), marker=(k == 1))))
        seq += 1
    for _ in range(3):                  # end packet sent three times with E bit (RFC 4733 2.5.1.4)
        pkts.append(((steps + 1) * 0.02, rtp(101, seq, ts0, ssrc, struct.pack("!BBH", ev, 0x80 | 10, steps * 160))))
        seq += 1
    write_pcap(path, pkts)

greet = silence(200) + tts("您好，这里是语音关怀的每日问候。今天您身体好吗？") + silence(300) + tone(1000, 300) + silence(200)
hello = silence(300) + tts("喂？") + silence(200)
off = tone(450, 1000) + silence(200) + tts("您拨打的电话已关机。") + silence(500) + tts("The number you dialed is power off.", "en") + silence(300)
CALLEE, CARRIER, CALLER = 0x56430001, 0x56430002, 0x56430003
ulaw = g711_pcap("greeting-pcmu.pcap", greet, "u", 0, CALLEE)
g711_pcap("greeting-pcma.pcap", greet, "a", 8, CALLEE)
g711_pcap("announce-off.pcap", off, "a", 8, CARRIER)
g711_pcap("hello-pcma.pcap", hello, "a", 8, CALLEE)
gcin = audioop.ulaw2lin(open("../../../../audio-fixtures/carrier/ann_off_zh_gcin_8k.ul", "rb").read(), 2)
g711_pcap("announce-off-gcin.pcap", tone(450, 1000) + silence(200) + gcin + silence(300), "a", 8, CARRIER)
# the callee's "1" follows its greeting on the same SSRC: next sequence number, timestamp ~0.6 s later
n = len(greet) // 2 // 160
dtmf_pcap("dtmf-1.pcap", "1", CALLEE, seq0=n, ts0=n * 160 + 4800)
dtmf_pcap("dtmf-5.pcap", "5", CALLER)
open("greeting-pcmu.raw", "wb").write(ulaw)
with wave.open("greeting.wav", "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(greet)
print("greeting %.2f s, announcement %.2f s" % (len(greet) / 16000, len(off) / 16000))
