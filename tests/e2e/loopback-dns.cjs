// Preloaded with `node -r` by the ACME tests: resolves the names listed in
// TB_LOOPBACK_NAMES (comma-separated) to 127.0.0.1, so a client can use a certificate's
// real name while every byte stays on loopback. Other names resolve as usual.
const dns = require("node:dns");
const names = new Set((process.env.TB_LOOPBACK_NAMES || "").split(",").filter(Boolean));
const lookup = dns.lookup;
dns.lookup = function (host, options, callback) {
  if (typeof options === "function") {
    callback = options;
    options = {};
  }
  if (!names.has(host)) return lookup.call(this, host, options, callback);
  if (options && options.all) {
    return process.nextTick(callback, null, [{ address: "127.0.0.1", family: 4 }]);
  }
  return process.nextTick(callback, null, "127.0.0.1", 4);
};
