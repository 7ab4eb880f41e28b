/*
 * tauc-tracker.js: the portal's event tracker (collection.md "The tracker").
 *
 * Include it once per page:
 *   <script src="https://collector.example.com/v1/tracker.js" async
 *           data-tauc-app-version="web-2.3.1"></script>
 * Optional attributes on the script tag: data-tauc-endpoint (default: the
 * script's origin + /v1/events), data-tauc-user-id. In the page:
 * window.tauc.setUser(id), window.tauc.flush().
 *
 * It sends page_enter/page_leave, clicks and impressions of elements
 * marked with data-tauc-target-type (page|button|banner) and
 * data-tauc-target-id, and CORS failures of cross-origin fetch and
 * XMLHttpRequest calls. Events are batched (50 or 5 s) and sent as
 * text/plain (no preflight) with fetch keepalive, or sendBeacon when the
 * page is hidden; a failed send keeps its events (same event_id) for the
 * next try, in this page or, through localStorage, the next page of the
 * site. It has no dependencies and never throws into the page: the
 * wrapped calls return and throw exactly what they did before.
 */
(function () {
  "use strict";
  if (typeof window === "undefined" || window.__taucTracker) return;
  window.__taucTracker = true;

  var MAX_BATCH = 50;
  var FLUSH_MS = 5000;
  var QUEUE_KEY = "tauc_queue";
  var DEVICE_KEY = "tauc_device_id";
  var TYPES = { page: 1, button: 1, banner: 1 };

  function safe(fn) {
    return function () {
      try {
        return fn.apply(this, arguments);
      } catch (e) {
        /* never into the page */
      }
    };
  }

  var script = document.currentScript || null;
  function attr(name) {
    return script && script.getAttribute ? script.getAttribute(name) : null;
  }
  var scriptOrigin = location.origin;
  try {
    if (script && script.src) scriptOrigin = new URL(script.src, location.href).origin;
  } catch (e) {}
  var endpoint = attr("data-tauc-endpoint") || scriptOrigin + "/v1/events";
  var endpointAbs = new URL(endpoint, location.href).href;
  var appVersion = attr("data-tauc-app-version");
  var userId = attr("data-tauc-user-id");

  var origFetch = window.fetch ? window.fetch.bind(window) : null;
  var store = (function () {
    try {
      var s = window.localStorage;
      s.setItem("tauc_probe", "1");
      s.removeItem("tauc_probe");
      return s;
    } catch (e) {
      return null;
    }
  })();

  function randomId() {
    try {
      if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
      var b = new Uint8Array(16);
      crypto.getRandomValues(b);
      return Array.prototype.map
        .call(b, function (x) {
          return (x + 256).toString(16).slice(1);
        })
        .join("");
    } catch (e) {
      return String(Date.now()) + "-" + String(Math.random()).slice(2);
    }
  }

  var deviceId = (store && store.getItem(DEVICE_KEY)) || null;
  if (!deviceId) {
    deviceId = randomId();
    if (store) store.setItem(DEVICE_KEY, deviceId);
  }

  // ---- queue and sending ----------------------------------------------
  // Unsent events live in memory and, for the next page of this site, in
  // localStorage under this page view's own key (tabs do not overwrite
  // each other): the queue and the batches sent but not yet answered. A
  // page that loads takes over every stored key. An event is dropped from
  // storage only once the collector answered its batch (or a beacon was
  // queued while the collector answers), so a failed send, a collector
  // that is down, or a page left mid-send loses nothing; the price is a
  // rare second copy with the same event_id, which DWD dedupe removes.
  var queue = [];
  var inflight = [];
  var saveKey = QUEUE_KEY + "." + randomId();
  try {
    if (store) {
      var keys = [];
      for (var k = 0; k < store.length; k++) {
        var name = store.key(k);
        if (name === QUEUE_KEY || (name && name.indexOf(QUEUE_KEY + ".") === 0)) keys.push(name);
      }
      for (var j = 0; j < keys.length; j++) {
        var saved = JSON.parse(store.getItem(keys[j]) || "[]");
        if (saved && saved.length) queue = queue.concat(saved);
        store.removeItem(keys[j]);
      }
      queue = queue.slice(-500);
    }
  } catch (e) {}
  var timer = null;
  var sending = false;
  // the last send failed: on leaving, keep the events for the next page
  // instead of a beacon that would most likely be lost too
  var failing = false;

  function save() {
    if (!store) return;
    try {
      var all = [];
      for (var i = 0; i < inflight.length; i++) all = all.concat(inflight[i]);
      all = all.concat(queue).slice(-500);
      if (all.length) store.setItem(saveKey, JSON.stringify(all));
      else store.removeItem(saveKey);
    } catch (e) {}
  }

  function schedule() {
    if (!timer) timer = setTimeout(safe(function () { timer = null; flush(false); }), FLUSH_MS);
  }

  function enqueue(ev) {
    ev.event_id = randomId();
    ev.client_ts = Date.now();
    ev.device_id = deviceId;
    ev.device_id_type = "browser";
    if (userId) ev.user_id = userId;
    if (appVersion) ev.app_version = appVersion;
    queue.push(ev);
    save();
    if (queue.length >= MAX_BATCH) flush(false);
    else schedule();
  }

  function body(batch) {
    var now = Date.now();
    for (var i = 0; i < batch.length; i++) batch[i].sent_ts = now;
    return JSON.stringify(batch);
  }

  function keep(batch) {
    queue = batch.concat(queue).slice(-500);
  }

  function answered(batch) {
    var i = inflight.indexOf(batch);
    if (i >= 0) inflight.splice(i, 1);
  }

  function beacon(text) {
    try {
      return !!navigator.sendBeacon(endpoint, new Blob([text], { type: "text/plain" }));
    } catch (e) {
      return false;
    }
  }

  var flush = safe(function (leaving) {
    if (timer) {
      clearTimeout(timer);
      timer = null;
    }
    if (leaving && failing) {
      save();
      schedule(); // in case the page comes back (a hidden tab shown again)
      return;
    }
    while (queue.length) {
      if (sending && !leaving) return;
      var batch = queue.splice(0, MAX_BATCH);
      var text = body(batch);
      if (leaving && navigator.sendBeacon && beacon(text)) continue;
      if (!origFetch) {
        keep(batch);
        break;
      }
      sending = !leaving;
      inflight.push(batch);
      send(batch, text);
      if (!leaving) break;
    }
    save();
  });

  function send(batch, text) {
    origFetch(endpoint, {
      method: "POST",
      body: text,
      keepalive: true,
      credentials: "omit",
      headers: { "Content-Type": "text/plain" },
    }).then(
      safe(function (r) {
        sending = false;
        answered(batch);
        // 4xx other than 429: the events are bad and a retry will not help
        failing = r.status >= 500 || r.status === 429;
        if (failing) retryLater(batch);
        else if (queue.length) flush(false);
        save();
      }),
      safe(function () {
        sending = false;
        failing = true;
        answered(batch);
        retryLater(batch);
        save();
      })
    );
  }

  function retryLater(batch) {
    keep(batch);
    schedule();
  }

  // events taken over from an earlier page go out soon
  if (queue.length) {
    save();
    schedule();
  }

  // ---- page views ---------------------------------------------------------
  var view = null;
  var nextUrl = null;

  function enterPage(fromUrl) {
    view = { url: location.href, from: fromUrl, enter: Date.now(), seen: [] };
    enqueue({ event_type: "page_enter", page: { url: view.url, from_url: fromUrl || null } });
    observeAll(true);
  }

  function leavePage(toUrl) {
    if (!view) return;
    var now = Date.now();
    enqueue({
      event_type: "page_leave",
      page: { url: view.url, from_url: view.from || null, to_url: toUrl || null },
      page_enter_ts: view.enter,
      page_leave_ts: now,
    });
    view = null;
  }

  function routeChanged() {
    if (view && view.url !== location.href) {
      var from = view.url;
      leavePage(location.href);
      enterPage(from);
    }
  }

  function wrapHistory(name) {
    var orig = history[name];
    if (typeof orig !== "function") return;
    history[name] = function () {
      var result = orig.apply(this, arguments);
      safe(routeChanged)();
      return result;
    };
  }

  // ---- clicks and impressions --------------------------------------------
  function marked(el) {
    while (el && el.nodeType === 1) {
      var type = el.getAttribute("data-tauc-target-type");
      if (type && TYPES[type]) return el;
      el = el.parentNode;
    }
    return null;
  }

  function target(el) {
    return { type: el.getAttribute("data-tauc-target-type"), id: el.getAttribute("data-tauc-target-id") || "" };
  }

  var onClick = safe(function (e) {
    var a = e.target && e.target.closest ? e.target.closest("a[href]") : null;
    if (a) nextUrl = a.href;
    var el = marked(e.target);
    if (el) enqueue({ event_type: "click", page: { url: location.href }, target: target(el) });
  });

  var observer = null;
  if (window.IntersectionObserver) {
    observer = new IntersectionObserver(
      safe(function (entries) {
        for (var i = 0; i < entries.length; i++) {
          var en = entries[i];
          if (!view || en.intersectionRatio < 0.5) continue;
          if (view.seen.indexOf(en.target) >= 0) continue;
          view.seen.push(en.target);
          enqueue({ event_type: "impression", page: { url: location.href }, target: target(en.target) });
        }
      }),
      { threshold: [0.5] }
    );
  }

  var observed = typeof WeakSet !== "undefined" ? new WeakSet() : null;

  // A new page view observes every marked element afresh (its first
  // half-visible moment on this view is an impression); a DOM change only
  // adds the elements not yet observed.
  function observeAll(fresh) {
    if (!observer || !document.querySelectorAll) return;
    var els = document.querySelectorAll("[data-tauc-target-type]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i];
      if (!TYPES[el.getAttribute("data-tauc-target-type")]) continue;
      if (fresh === true) {
        observer.unobserve(el);
      } else if (observed && observed.has(el)) {
        continue;
      }
      if (observed) observed.add(el);
      observer.observe(el);
    }
  }

  // ---- CORS failures --------------------------------------------------------
  function crossOrigin(url) {
    try {
      var u = new URL(url, location.href);
      if (u.href.indexOf(endpointAbs) === 0) return null;
      if (u.protocol !== "http:" && u.protocol !== "https:") return null;
      return u.origin !== location.origin ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  function corsError(url, method, status, error, started) {
    enqueue({
      event_type: "cors_error",
      page: { url: location.href },
      cors: {
        url: url,
        method: String(method || "GET").toUpperCase(),
        origin: location.origin,
        status: status || 0,
        error: error,
        duration_ms: Math.max(0, Math.round(Date.now() - started)),
      },
    });
  }

  function errorText(err) {
    if (err && (err.name === "AbortError")) return "AbortError";
    if (err && (err.name === "TimeoutError")) return "timeout";
    try {
      return String(err);
    } catch (e) {
      return "error";
    }
  }

  if (origFetch) {
    window.fetch = function (input, init) {
      var url = null;
      var method = "GET";
      try {
        url = crossOrigin(typeof input === "string" ? input : input && input.url ? input.url : String(input));
        method = (init && init.method) || (input && input.method) || "GET";
      } catch (e) {}
      var started = Date.now();
      var p = origFetch.apply(window, arguments);
      if (!url) return p;
      p.then(
        safe(function (r) {
          if (r && r.type !== "opaque" && r.status >= 400) corsError(url, method, r.status, "HTTP " + r.status, started);
        }),
        safe(function (err) {
          corsError(url, method, 0, errorText(err), started);
        })
      );
      return p;
    };
  }

  if (window.XMLHttpRequest) {
    var proto = XMLHttpRequest.prototype;
    var origOpen = proto.open;
    var origSend = proto.send;
    proto.open = function (method, url) {
      try {
        this.__tauc = { method: method, url: crossOrigin(url) };
      } catch (e) {}
      return origOpen.apply(this, arguments);
    };
    proto.send = function () {
      var info = this.__tauc;
      if (info && info.url) {
        var xhr = this;
        var started = Date.now();
        var outcome = null;
        var note = function (what) {
          return safe(function () { outcome = what; });
        };
        xhr.addEventListener("error", note("TypeError: Network request failed"));
        xhr.addEventListener("timeout", note("timeout"));
        xhr.addEventListener("abort", note("AbortError"));
        xhr.addEventListener(
          "loadend",
          safe(function () {
            if (outcome) corsError(info.url, info.method, 0, outcome, started);
            else if (xhr.status === 0) corsError(info.url, info.method, 0, "TypeError: Network request failed", started);
            else if (xhr.status >= 400) corsError(info.url, info.method, xhr.status, "HTTP " + xhr.status, started);
          })
        );
      }
      return origSend.apply(this, arguments);
    };
  }

  // ---- wiring ---------------------------------------------------------------
  window.tauc = {
    setUser: safe(function (id) {
      userId = id ? String(id) : null;
    }),
    flush: safe(function () {
      flush(false);
    }),
  };

  safe(function () {
    document.addEventListener("click", onClick, true);
    wrapHistory("pushState");
    wrapHistory("replaceState");
    window.addEventListener("popstate", safe(routeChanged));
    window.addEventListener(
      "pagehide",
      safe(function () {
        leavePage(nextUrl);
        flush(true);
      })
    );
    document.addEventListener(
      "visibilitychange",
      safe(function () {
        if (document.visibilityState === "hidden") flush(true);
      })
    );
    window.addEventListener(
      "pageshow",
      safe(function (e) {
        if (e.persisted && !view) enterPage(document.referrer);
      })
    );
    if (window.MutationObserver) {
      new MutationObserver(safe(function () { observeAll(false); })).observe(document.documentElement, { childList: true, subtree: true });
    }
    enterPage(document.referrer);
  })();
})();
