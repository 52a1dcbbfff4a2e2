// The console's only way to data: the public /v1 API with the operator's key (kept in sessionStorage).
const KEY_NAME = "journeyrec.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, detail, path) {
    super(`${status} ${detail}`);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

// method, path ("/v1/..."), optional JSON body: the decoded answer, or an ApiError.
export async function api(method, path, body) {
  const key = getKey();
  if (!key) {
    throw new ApiError(0, "no API key: enter one above", path);
  }
  const headers = { "X-API-Key": key, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the service did not answer (${e.message})`, path);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : text.slice(0, 300) || response.statusText;
    throw new ApiError(response.status, detail, path);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);

// A query string from an object (null, undefined and "" left out).
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.append(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const seg = (s) => encodeURIComponent(s);

// One sentence for the operator about a failed call.
export function describe(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err && err.message ? err.message : err}`;
  if (err.status === 0) return `No data: ${err.detail}.`;
  if (err.status === 401) {
    return `The API key was refused (401: ${err.detail}). Enter a valid key above.`;
  }
  if (err.status === 403) {
    return `This API key is not allowed to do this (403: ${err.detail}). Reading needs a key with the read scope; actions need the admin scope.`;
  }
  return `${err.path} answered ${err.status}: ${err.detail}`;
}
