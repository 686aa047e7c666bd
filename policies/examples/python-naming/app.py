"""A weft naming component written in Python (componentize-py).

Every endpoint answers to its name, bare and under a DNS domain, and each
of its addresses points back (PTR) to the qualified name. The domain comes
from the network's module configuration (`--module-config domain=corp.example`)
and defaults to `<network>.internal`. An endpoint labelled `role=X` also
answers to `X.<domain>`, so several replicas share one name.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports.weft_naming_types import DnsRecord, RecordKind


def config_value(config, key, default):
    for k, v in config:
        if k == key:
            return v
    return default


class Namer(exports.Namer):
    def names(self, endpoint, network, config):
        domain = config_value(config, "domain", f"{network.name}.internal").lower().strip(".")
        if not domain:
            raise Err("module config domain= must not be empty")
        name = endpoint.name.lower()
        names = [name, f"{name}.{domain}"]
        role = dict(endpoint.labels).get("role")
        if role:
            names.append(f"{role.lower()}.{domain}")
        records = []
        for address in endpoint.addresses:
            for n in names:
                records.append(DnsRecord(kind=RecordKind.ADDRESS, name=n, address=address))
            records.append(DnsRecord(kind=RecordKind.POINTER, name=f"{name}.{domain}", address=address))
        return records
