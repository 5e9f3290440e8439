// RAPL's domains and their energy containment: the one written rule, which the three RAPL sensors
// apply to the channels they open (set_parents) and the Python module exports for recordings that
// do not state parents (parent_by_name, bound as _core.rapl_parent; greenprobe/topology.py).
// Public (not in cpp/src/sensors) so that the bindings reach it; no I/O.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace greenprobe::rapl {

enum class Domain { Package, Core, Uncore, Dram, Psys };

// The powercap name of a domain, the base of the sensors' domain names ("package-0", "core-1").
inline const char* powercap_name(Domain d) {
    switch (d) {
        case Domain::Package: return "package";
        case Domain::Core: return "core";
        case Domain::Uncore: return "uncore";
        case Domain::Dram: return "dram";
        case Domain::Psys: return "psys";
    }
    return "?";
}

// RAPL's energy containment, the one rule the three RAPL sensors state as parent_domain: core and
// uncore inside their package, where that package is read; packages and DRAM inside psys (the
// platform domain), where it is read; psys, and packages and DRAM without it, at the top.
// Containment of energy, not of the powercap tree: powercap lists dram under its package, but the
// package's energy does not include DRAM's. kind[c] is channel c's domain, package_of[c] the name
// its package's channel has ("" where unknown); returns each channel's parent ("" at the top).
inline std::vector<std::string> parents(const std::vector<std::string>& names, const std::vector<Domain>& kind,
                                        const std::vector<std::string>& package_of) {
    std::string platform;
    for (std::size_t c = 0; c < names.size() && platform.empty(); ++c) {
        if (kind[c] == Domain::Psys) platform = names[c];
    }
    auto read = [&](const std::string& name) {
        return !name.empty() && std::find(names.begin(), names.end(), name) != names.end();
    };
    std::vector<std::string> out(names.size());
    for (std::size_t c = 0; c < names.size(); ++c) {
        switch (kind[c]) {
            case Domain::Core:
            case Domain::Uncore: out[c] = read(package_of[c]) ? package_of[c] : ""; break;
            case Domain::Package:
            case Domain::Dram: out[c] = platform; break;
            case Domain::Psys: break;
        }
    }
    return out;
}

// Where a channel lies for parents(): its domain and the name its package's channel has.
struct Placed {
    Domain kind;
    std::string package;
};
inline std::string package_name(int id) { return "package-" + std::to_string(id); }

// Sets each channel's parent_domain by parents(); place(c) says where channel c lies.
template <typename Channels, typename Place>
void set_parents(Channels& channels, Place place) {
    std::vector<std::string> names, package_of;
    std::vector<Domain> kind;
    for (std::size_t c = 0; c < channels.size(); ++c) {
        const Placed at = place(c);
        names.push_back(channels[c].domain);
        kind.push_back(at.kind);
        package_of.push_back(at.package);
    }
    const std::vector<std::string> parent = parents(names, kind, package_of);
    for (std::size_t c = 0; c < channels.size(); ++c) channels[c].parent_domain = parent[c];
}

// Where a domain lies by the name the RAPL sensors give it: powercap_name(kind), with "-N" for
// package N ("package-1", "core-1", "dram-1"; without it, package 0: "core" on one socket), "psys"
// alone; nothing for another name (a zone RAPL does not document: at the top).
inline std::optional<Placed> place_by_name(const std::string& name) {
    for (Domain d : {Domain::Package, Domain::Core, Domain::Uncore, Domain::Dram, Domain::Psys}) {
        const std::string base = powercap_name(d);
        if (name == base) return Placed{d, d == Domain::Package ? name : d == Domain::Psys ? "" : "package-0"};
        if (d == Domain::Psys || name.size() <= base.size() + 1 || name.compare(0, base.size() + 1, base + "-") != 0) {
            continue;
        }
        const std::string id = name.substr(base.size() + 1);  // as written: the name, not a number
        if (id.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        return Placed{d, "package-" + id};
    }
    return std::nullopt;
}

// parents() for recordings that name their domains but do not state parents: the parent of
// `domain` among the domains one RAPL sensor read (`domain` itself need not be among them), by the
// names alone; "" at the top.
inline std::string parent_by_name(const std::string& domain, const std::vector<std::string>& domains) {
    const std::optional<Placed> at = place_by_name(domain);
    if (!at) return "";
    std::vector<std::string> names{domain}, package_of{at->package};
    std::vector<Domain> kind{at->kind};
    for (const auto& other : domains) {
        const std::optional<Placed> o = other == domain ? std::nullopt : place_by_name(other);
        if (!o) continue;
        names.push_back(other);
        kind.push_back(o->kind);
        package_of.push_back(o->package);
    }
    return parents(names, kind, package_of)[0];
}

}  // namespace greenprobe::rapl
