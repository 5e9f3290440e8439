#include "cpu_info.hpp"

#include <sstream>

#include "fileio.hpp"
#include "text.hpp"

namespace greenprobe {

using text::trim;

CpuIdentity read_cpu_identity(const std::string& proc_root) {
    CpuIdentity id;
    auto text = read_small_file(proc_root + "/cpuinfo");
    if (!text) return id;
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        const std::string key = trim(line.substr(0, colon));
        const std::string value = trim(line.substr(colon + 1));
        if (key == "processor") ++id.logical_cpus;
        if (id.logical_cpus > 1) continue;  // identity from the first CPU only
        if (key == "vendor_id") id.vendor_id = value;
        else if (key == "cpu family") text::parse_integer(value, id.family);  // unread: stays -1 (unknown)
        else if (key == "model") text::parse_integer(value, id.model);
        else if (key == "model name") id.model_name = value;
    }
    return id;
}

CpuTopology read_cpu_topology(const std::string& root) {
    CpuTopology topo;
    int err = 0;
    for (const auto& name : list_dir(root, &err)) {
        if (name.size() < 4 || name.compare(0, 3, "cpu") != 0) continue;
        const std::string num = name.substr(3);
        int cpu = 0, package = 0, core_id = 0;
        if (num.find_first_not_of("0123456789") != std::string::npos || !text::parse_integer(num, cpu)) continue;
        auto pkg = read_small_file(root + "/" + name + "/topology/physical_package_id");
        // offline CPUs have no topology directory; one whose package id is not a number is left out too
        if (!pkg || !text::parse_integer(*pkg, package)) continue;
        auto core = read_small_file(root + "/" + name + "/topology/core_id");
        topo.package_cpus[package].push_back(cpu);
        topo.core_of_cpu[cpu] = core && text::parse_integer(*core, core_id) ? core_id : cpu;
    }
    if (topo.package_cpus.empty()) {
        topo.package_cpus[0] = {0};
        topo.core_of_cpu[0] = 0;
        topo.assumed = true;
    }
    return topo;
}

}  // namespace greenprobe
