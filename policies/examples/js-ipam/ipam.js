// A weft IPAM component written in JavaScript (jco componentize).
//
// It hands out addresses from the top of the pool downwards — the highest
// free address first — using the lease view the host grants (`is-free`),
// so it never needs the list of leases. A static request is honoured if it
// is free and inside the pool. IPv4 only; an IPv6 pool is refused with a
// clear error. The module configuration may reserve the top of the pool:
// `--module-config reserve-top=N` keeps the highest N addresses free.
import { isFree } from "weft:ipam/leases@0.1.0";

function config(cfg, key, dflt) {
  for (const [k, v] of cfg) {
    if (k === key) return v;
  }
  return dflt;
}

function span(cidr) {
  const size = 2 ** (32 - cidr.prefix);
  const base = (cidr.address.val >>> 0) & ~(size - 1) >>> 0;
  return [base >>> 0, (base + size - 1) >>> 0];
}

export const allocator = {
  allocate(pool, request, cfg) {
    if (pool.subnet.address.tag !== "v4") {
      throw { tag: "invalid", val: "this example allocates IPv4 only" };
    }
    const [net, bcast] = span(pool.subnet);
    let [first, last] = pool.range ? span(pool.range) : [net, bcast];
    first = Math.max(first, net + 1);
    last = Math.min(last, bcast - 1);
    const gateway = pool.gateway && pool.gateway.tag === "v4" ? pool.gateway.val >>> 0 : -1;
    if (request.staticAddress) {
      const want = request.staticAddress;
      if (want.tag !== "v4" || want.val < first || want.val > last || want.val === gateway) {
        throw { tag: "invalid", val: "the requested address is not a usable address of the pool" };
      }
      if (!isFree(want)) throw { tag: "conflict", val: "the requested address is already leased" };
      return want;
    }
    const reserve = Number.parseInt(config(cfg, "reserve-top", "0"), 10);
    if (!Number.isInteger(reserve) || reserve < 0) {
      throw { tag: "invalid", val: "module config reserve-top must be a whole number" };
    }
    for (let a = last - reserve; a >= first; a--) {
      if (a === gateway) continue;
      const addr = { tag: "v4", val: a };
      if (isFree(addr)) return addr;
    }
    throw { tag: "exhausted", val: "no free address left in the pool" };
  },
};
