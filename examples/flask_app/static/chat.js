// The chat page: one WebSocket to the chat route; the session cookie goes with the handshake.
const log = document.getElementById("log");
const input = document.getElementById("message");

function show(text, className) {
  const line = document.createElement("p");
  line.textContent = text;
  if (className) line.className = className;
  log.appendChild(line);
  log.scrollTop = log.scrollHeight;
}

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(`${scheme}//${location.host}${log.dataset.chatUrl}`);
socket.onopen = () => show("Connected.", "status");
socket.onclose = (event) => show(`Disconnected (${event.code}${event.reason ? ": " + event.reason : ""}).`, "status");
socket.onmessage = (event) => {
  const data = JSON.parse(event.data);
  if (data.event === "message") show(`${data.user}: ${data.text}`);
  else show(`${data.user} ${data.event}.`, "status");
};

document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (input.value && socket.readyState === WebSocket.OPEN) socket.send(input.value);
  input.value = "";
});
