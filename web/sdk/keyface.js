// KeyFace Live browser SDK: embed a real-time talking avatar in any page. No dependencies.
//
//   import { KeyFaceAvatar } from "/sdk/keyface.js";
//   const avatar = await KeyFaceAvatar.connect({ server: "https://avatar.example.com", token, video: el });
//   avatar.addEventListener("speech_started", (e) => console.log(e.detail));
//   avatar.sendPcm(int16Samples, 24000);      // raw TTS audio as it arrives
//   avatar.endUtterance();                     // the utterance is complete
//   await avatar.interrupt();                  // resolves with the playback_finished event
//   avatar.setEmotion({ valence: 0.6, arousal: 0.3 }, 0.5);
//   await avatar.close();
//
// Events (CustomEvent, message in `detail`): ready, media_started, speech_started,
// playback_finished, emotion_set, warning, error, session_closed, closed, message (every message).

const DEFAULT_FORMAT = { sampleRate: 16000, channels: 1, encoding: "pcm16" };

function wsUrl(server, path, token) {
  const url = new URL(path, server);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    });
  });
}

export class KeyFaceError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export class KeyFaceAvatar extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.server]  server origin (default: this page's)
   * @param {string} [options.token]   API token (to create a session) or a session token
   * @param {object} [options.session] an existing session ({session_id, token, offer_url, audio_url, ice_servers})
   * @param {HTMLVideoElement} [options.video] element to show the avatar in
   * @param {string} [options.image]   identity image as a data: URL or base64
   * @param {string|object} [options.emotion] preset name or {valence, arousal}
   * @param {string} [options.codec]   "vp8" or "h264" to force a video codec
   * @param {RTCIceServer[]} [options.iceServers] override the server's STUN/TURN list
   */
  static async connect(options = {}) {
    const avatar = new KeyFaceAvatar(options);
    await avatar.connect();
    return avatar;
  }

  constructor(options = {}) {
    super();
    this.options = options;
    this.server = options.server || globalThis.location?.origin;
    this.session = options.session || null;
    this.video = options.video || null;
    this.pc = null;
    this.ws = null;
    this.stream = null;
    this.format = null;
    this.limits = { maxMessageBytes: 1 << 20 };
    this._pendingInterrupt = null;
    this._mic = null;
  }

  get sessionId() {
    return this.session?.session_id;
  }

  // -- connection ------------------------------------------------------------------------------

  async connect() {
    if (!this.session) {
      const body = {};
      if (this.options.image) body.image = this.options.image;
      if (this.options.emotion) body.emotion = this.options.emotion;
      if (this.options.seed !== undefined) body.seed = this.options.seed;
      this.session = await this._fetchJson("POST", "/v1/sessions", body, this.options.token);
    }
    this.token = this.session.token || this.options.token;
    await this._connectMedia();
    await this._connectSocket();
    return this;
  }

  async _connectMedia() {
    const iceServers = this.options.iceServers || this.session.ice_servers || [];
    const pc = (this.pc = new RTCPeerConnection({ iceServers }));
    const video = pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    if (this.options.codec && video.setCodecPreferences && globalThis.RTCRtpReceiver?.getCapabilities) {
      const want = `video/${this.options.codec}`.toLowerCase();
      const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
      const chosen = codecs.filter((c) => c.mimeType.toLowerCase() === want);
      if (chosen.length) video.setCodecPreferences([...chosen, ...codecs.filter((c) => !chosen.includes(c))]);
    }
    this.stream = new MediaStream();
    pc.addEventListener("track", (ev) => {
      this.stream.addTrack(ev.track);
      if (this.video) {
        this.video.srcObject = this.stream;
        this.video.play?.().catch(() => {});
      }
    });
    pc.addEventListener("connectionstatechange", () => {
      this._emit("connection", { type: "connection", state: pc.connectionState });
    });
    await pc.setLocalDescription(await pc.createOffer());
    await this._iceGathered(this.options.iceGatherTimeout ?? 3000);
    const answer = await this._fetchJson(
      "POST",
      this.session.offer_url,
      { sdp: pc.localDescription.sdp, type: "offer" },
      this.token,
    );
    await pc.setRemoteDescription(answer);
  }

  _iceGathered(timeoutMs) {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        pc.removeEventListener("icegatheringstatechange", check);
        clearTimeout(timer);
        resolve();
      };
      const check = () => pc.iceGatheringState === "complete" && done();
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  _connectSocket() {
    return new Promise((resolve, reject) => {
      const ws = (this.ws = new WebSocket(wsUrl(this.server, this.session.audio_url, this.token)));
      ws.binaryType = "arraybuffer";
      let ready = false;
      ws.addEventListener("message", (ev) => {
        if (typeof ev.data !== "string") return;
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (msg.type === "ready") {
          ready = true;
          this.limits.maxMessageBytes = msg.max_message_bytes || this.limits.maxMessageBytes;
          resolve();
        }
        if (msg.type === "playback_finished" && this._pendingInterrupt) {
          this._pendingInterrupt(msg);
          this._pendingInterrupt = null;
        }
        this._emit(msg.type, msg);
        this._emit("message", msg);
      });
      ws.addEventListener("close", (ev) => {
        const info = { type: "closed", code: ev.code, reason: ev.reason };
        if (!ready) reject(new KeyFaceError(ev.reason || "closed", `audio socket closed (${ev.code})`));
        this._emit("closed", info);
      });
      ws.addEventListener("error", () => {
        if (!ready) reject(new KeyFaceError("socket", "cannot open the audio websocket"));
      });
    });
  }

  async _fetchJson(method, path, body, token) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(new URL(path, this.server), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      keepalive: method === "DELETE", // lets a session end even while the page unloads
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = data.error || {};
      throw new KeyFaceError(err.code || "http", err.message || response.statusText, response.status);
    }
    return data;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new KeyFaceError("closed", "not connected");
    this.ws.send(typeof message === "string" || message instanceof ArrayBuffer ? message : JSON.stringify(message));
  }

  // -- audio in ----------------------------------------------------------------------------------

  /** Declare the format of the PCM that follows (done for you by sendPcm). */
  startAudio(format = {}) {
    const f = { ...DEFAULT_FORMAT, ...format };
    this._send({ type: "start", sample_rate: f.sampleRate, channels: f.channels, encoding: f.encoding });
    this.format = f;
  }

  /** Send raw PCM: Int16Array (pcm16) or Float32Array (converted to pcm16), mono unless `channels`. */
  sendPcm(samples, sampleRate = 16000, channels = 1) {
    const pcm = samples instanceof Int16Array ? samples : floatToPcm16(samples);
    const f = this.format;
    if (!f || f.sampleRate !== sampleRate || f.channels !== channels || f.encoding !== "pcm16") {
      this.startAudio({ sampleRate, channels, encoding: "pcm16" });
    }
    const frame = 2 * channels;
    const step = Math.max(frame, Math.floor(this.limits.maxMessageBytes / frame) * frame);
    const bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    for (let i = 0; i < bytes.length; i += step) this._send(bytes.slice(i, i + step).buffer);
  }

  /** The current utterance is complete: the avatar speaks what it has, then idles. */
  endUtterance() {
    this._send({ type: "end_utterance" });
  }

  /** Stop speaking now. Resolves with the playback_finished event ({playback_position, interrupted}). */
  interrupt() {
    this._stopPlayback();
    const answer = new Promise((resolve) => (this._pendingInterrupt = resolve));
    this._send({ type: "interrupt" });
    return answer;
  }

  /** {valence, arousal} in [-1, 1] or a preset name ("happy", "calm", …), ramped over `ramp` seconds. */
  setEmotion(emotion, ramp = 0.5) {
    const body = typeof emotion === "string" ? { preset: emotion } : { valence: emotion.valence, arousal: emotion.arousal };
    this._send({ type: "emotion", ...body, ramp });
  }

  /**
   * Stream mono float samples at real-time pace (plus a small lead), then end the utterance.
   * Resolves when everything has been sent. `interrupt()` stops it.
   */
  async playSamples(samples, sampleRate = 16000, { chunkMs = 40, leadMs = 300 } = {}) {
    this._stopPlayback();
    const abort = (this._playback = new AbortController());
    const chunk = Math.round((sampleRate * chunkMs) / 1000);
    const start = performance.now();
    this._emit("playback_sending", { type: "playback_sending", seconds: samples.length / sampleRate });
    try {
      for (let i = 0; i < samples.length; i += chunk) {
        const due = start + (i / sampleRate) * 1000 - leadMs;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait, abort.signal);
        if (abort.signal.aborted) return;
        this.sendPcm(samples.subarray(i, i + chunk), sampleRate);
      }
      this.endUtterance();
    } catch (err) {
      if (err.name !== "AbortError") throw err;
    } finally {
      if (this._playback === abort) this._playback = null;
    }
  }

  /** Decode an audio file (WAV, MP3, … anything the browser reads) and stream it. */
  async playFile(file) {
    const data = file instanceof ArrayBuffer ? file : await file.arrayBuffer();
    const samples = await decodeTo16k(data);
    return this.playSamples(samples, 16000);
  }

  /** Server-side text-to-speech (espeak-ng), streamed like a file. */
  async say(text, { voice = "en", speed = 165 } = {}) {
    const headers = { "content-type": "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const response = await fetch(new URL(`/v1/sessions/${this.sessionId}/tts`, this.server), {
      method: "POST",
      headers,
      body: JSON.stringify({ text, voice, speed }),
    });
    if (!response.ok) {
      const err = (await response.json().catch(() => ({}))).error || {};
      throw new KeyFaceError(err.code || "http", err.message || response.statusText, response.status);
    }
    return this.playFile(await response.arrayBuffer());
  }

  _stopPlayback() {
    this._playback?.abort();
    this._playback = null;
  }

  /** Stream the microphone (16 kHz PCM16) until stopMicrophone(). */
  async startMicrophone() {
    if (this._mic) return;
    const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
    const context = new AudioContext({ sampleRate: 16000 });
    const source = context.createMediaStreamSource(media);
    const processor = context.createScriptProcessor(1024, 1, 1);
    processor.onaudioprocess = (ev) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.sendPcm(ev.inputBuffer.getChannelData(0), context.sampleRate);
    };
    source.connect(processor);
    processor.connect(context.destination);
    this._mic = { media, context, processor };
  }

  stopMicrophone() {
    if (!this._mic) return;
    this._mic.processor.disconnect();
    this._mic.media.getTracks().forEach((t) => t.stop());
    this._mic.context.close();
    this._mic = null;
    if (this.ws?.readyState === WebSocket.OPEN) this.endUtterance();
  }

  // -- stats and teardown ---------------------------------------------------------------------------

  /** {fps, framesDecoded, framesDropped, avOffsetMs, videoDelayMs, audioDelayMs, codec} from getStats(). */
  async stats() {
    if (!this.pc) return {};
    const report = await this.pc.getStats();
    const out = {};
    let video, audio;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") video = s;
      if (s.type === "inbound-rtp" && s.kind === "audio") audio = s;
    });
    const delay = (s) => (s && s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : null);
    if (video) {
      out.fps = video.framesPerSecond ?? null;
      out.framesDecoded = video.framesDecoded;
      out.framesDropped = video.framesDropped;
      out.width = video.frameWidth;
      out.height = video.frameHeight;
      const codec = video.codecId && report.get(video.codecId);
      out.codec = codec ? codec.mimeType : null;
    }
    out.videoDelayMs = delay(video);
    out.audioDelayMs = delay(audio);
    if (video?.estimatedPlayoutTimestamp && audio?.estimatedPlayoutTimestamp) {
      out.avOffsetMs = video.estimatedPlayoutTimestamp - audio.estimatedPlayoutTimestamp;
    } else if (out.videoDelayMs !== null && out.audioDelayMs !== null) {
      out.avOffsetMs = out.videoDelayMs - out.audioDelayMs;
    } else {
      out.avOffsetMs = null;
    }
    return out;
  }

  /** Close the socket and the peer, and end the session on the server. */
  async close({ endSession = true } = {}) {
    this._stopPlayback();
    this.stopMicrophone();
    this.ws?.close(1000);
    this.pc?.close();
    this.ws = null;
    this.pc = null;
    if (endSession && this.session) {
      try {
        await this._fetchJson("DELETE", `/v1/sessions/${this.sessionId}`, undefined, this.token);
      } catch (err) {
        if (err.status !== 404) throw err;
      }
    }
  }
}

/** Decode any audio file the browser can read to 16 kHz mono float samples. */
export async function decodeTo16k(arrayBuffer) {
  const Offline = globalThis.OfflineAudioContext || globalThis.webkitOfflineAudioContext;
  const probe = new Offline(1, 1, 16000);
  const decoded = await probe.decodeAudioData(arrayBuffer.slice(0));
  const frames = Math.ceil(decoded.duration * 16000);
  const context = new Offline(1, Math.max(1, frames), 16000);
  const source = context.createBufferSource();
  source.buffer = decoded;
  source.connect(context.destination);
  source.start();
  const rendered = await context.startRendering();
  return rendered.getChannelData(0);
}
