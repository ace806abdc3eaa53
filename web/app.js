// The demo page: connect to this server's avatar, speak (file, text, microphone), steer emotion.
import { KeyFaceAvatar } from "./sdk/keyface.js";

const $ = (id) => document.getElementById(id);
const state = (window.keyfaceApp = { avatar: null, events: [], videoFrames: 0, sendStartedAt: null, lastDelayMs: null });
const liveButtons = ["disconnect", "unmute", "interrupt", "play-wav", "say", "mic"];

// #token=API_TOKEN fills the token box; #session=ID&token=SESSION_TOKEN attaches to an existing session.
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) $("token").value = hash.get("token");
const attachTo = hash.get("session");

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(item);
  while ($("log").children.length > 100) $("log").lastChild.remove();
}

function setLive(live) {
  for (const id of liveButtons) $(id).disabled = !live;
  $("connect").disabled = live;
}

async function fileToDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function countFrames() {
  const video = $("avatar");
  if (!video.requestVideoFrameCallback) return;
  const tick = () => {
    state.videoFrames += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

async function connect() {
  setStatus("connecting…");
  $("connect").disabled = true;
  try {
    const image = $("identity").files[0] ? await fileToDataUrl($("identity").files[0]) : undefined;
    const token = $("token").value || undefined;
    const session = attachTo
      ? { session_id: attachTo, token, offer_url: `/v1/sessions/${attachTo}/offer`, audio_url: `/v1/sessions/${attachTo}/audio` }
      : undefined;
    const avatar = await KeyFaceAvatar.connect({
      token,
      session,
      video: $("avatar"),
      image,
      codec: $("codec").value || undefined,
    });
    state.avatar = avatar;
    for (const type of ["media_started", "speech_started", "playback_finished", "emotion_set", "warning", "error", "session_closed"]) {
      avatar.addEventListener(type, (ev) => onEvent(ev.detail));
    }
    avatar.addEventListener("playback_sending", () => (state.sendStartedAt = performance.now()));
    avatar.addEventListener("connection", (ev) => setStatus(ev.detail.state, ev.detail.state === "connected" ? "live" : ""));
    avatar.addEventListener("closed", (ev) => {
      log(`socket closed (${ev.detail.code} ${ev.detail.reason || ""})`);
      disconnect(false);
    });
    setLive(true);
    setStatus(avatar.pc.connectionState, avatar.pc.connectionState === "connected" ? "live" : "");
    log(`session ${avatar.sessionId}`);
    countFrames();
  } catch (err) {
    setStatus("error", "error");
    log(`connect failed: ${err.message}`);
    $("connect").disabled = false;
  }
}

function onEvent(msg) {
  state.events.push({ ...msg, at: performance.now() });
  if (msg.type === "speech_started" && state.sendStartedAt !== null) {
    state.lastDelayMs = performance.now() - state.sendStartedAt;
    state.sendStartedAt = null;
    const server = msg.latency != null ? ` (server ${Math.round(msg.latency * 1000)} ms)` : "";
    $("stat-ffd").textContent = `${Math.round(state.lastDelayMs)} ms${server}`;
  }
  const { type, ...rest } = msg;
  log(`${type} ${JSON.stringify(rest)}`);
}

async function disconnect(endSession = !attachTo) {
  const avatar = state.avatar;
  state.avatar = null;
  setLive(false);
  setStatus("disconnected");
  if (avatar) await avatar.close({ endSession }).catch((err) => log(`close: ${err.message}`));
}

async function guarded(action) {
  try {
    await action();
  } catch (err) {
    log(`error: ${err.message}`);
  }
}

$("connect").onclick = connect;
$("disconnect").onclick = () => disconnect();
$("unmute").onclick = () => {
  const video = $("avatar");
  video.muted = !video.muted;
  $("unmute").textContent = video.muted ? "Unmute" : "Mute";
};
$("interrupt").onclick = () =>
  guarded(async () => {
    const t0 = performance.now();
    const answer = await state.avatar.interrupt();
    log(`interrupt answered in ${Math.round(performance.now() - t0)} ms at ${answer.playback_position} s`);
  });
$("play-wav").onclick = () =>
  guarded(async () => {
    const file = $("wav-file").files[0];
    if (!file) throw new Error("choose an audio file first");
    await state.avatar.playFile(file);
  });
$("say").onclick = () => guarded(() => state.avatar.say($("text").value));
$("mic").onclick = () =>
  guarded(async () => {
    if ($("mic").dataset.on) {
      state.avatar.stopMicrophone();
      delete $("mic").dataset.on;
      $("mic").textContent = "Start microphone";
    } else {
      await state.avatar.startMicrophone();
      $("mic").dataset.on = "1";
      $("mic").textContent = "Stop microphone";
    }
  });

function sendEmotion() {
  if (!state.avatar) return;
  const ramp = Number($("ramp").value) || 0;
  const preset = $("preset").value;
  guarded(async () =>
    state.avatar.setEmotion(preset || { valence: Number($("valence").value), arousal: Number($("arousal").value) }, ramp),
  );
}
for (const axis of ["valence", "arousal"]) {
  $(axis).oninput = () => ($(`${axis}-out`).textContent = Number($(axis).value).toFixed(2));
  $(axis).onchange = () => {
    $("preset").value = "";
    sendEmotion();
  };
}
$("preset").onchange = sendEmotion;

setInterval(async () => {
  if (!state.avatar) return;
  const stats = await state.avatar.stats().catch(() => ({}));
  state.stats = stats;
  $("stat-fps").textContent = stats.fps != null ? stats.fps.toFixed(1) : "–";
  $("stat-frames").textContent = `${stats.framesDecoded ?? "–"} decoded, ${stats.framesDropped ?? 0} dropped`;
  $("stat-av").textContent = stats.avOffsetMs != null ? `${Math.round(stats.avOffsetMs)} ms` : "–";
  $("stat-codec").textContent = stats.codec || "–";
  $("stat-size").textContent = stats.width ? `${stats.width}×${stats.height}` : "–";
}, 1000);

window.addEventListener("pagehide", () => state.avatar?.close({ endSession: !attachTo }));
