/*
 * ctest: how libdettool_plugins.so finds TensorRT's registry and logger (findNvinferSymbol in
 * plugins_trt/common/plugin_utils.cpp): in libnvinfer.so.10 / .11 first, then in the global
 * scope, looked up anew each time (TensorRT may be loaded after the plugin library).
 *
 * Usage: dettool_nvinfer_lookup_test <libdettool_plugins.so> <stub libnvinfer.so.10>
 *
 * This executable exports decoys named getPluginRegistry() and getLogger() that return null, as an
 * application might export unrelated functions of those names. Before the stub is loaded the
 * library finds only the decoys: no registry, logging to stderr. Once the stub is loaded (with
 * RTLD_LOCAL, invisible to the global scope), registration and logging must reach the stub and
 * never the decoys.
 */
#include "check.h"
#include "recording_registry.h"

#include <NvInferRuntime.h>

#include <cstdio>
#include <dlfcn.h>
#include <string>

using namespace nvinfer1;

namespace
{
int32_t gDecoyRegistryCalls = 0;
int32_t gDecoyLoggerCalls = 0;

template <typename Fn>
Fn symbol(void* handle, char const* name)
{
    void* found = dlsym(handle, name);
    if (found == nullptr)
    {
        std::printf("FAIL: no symbol %s\n", name);
        ++gFailures;
    }
    return reinterpret_cast<Fn>(found);
}

//! Have the library log one error: a creator handed no attributes.
void logOneError(IPluginCreatorInterface* const* creators)
{
    PluginFieldCollection none{0, nullptr};
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    CHECK(creator->createPlugin("lookup", &none, TensorRTPhase::kBUILD) == nullptr);
}
} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    ++gDecoyRegistryCalls;
    return nullptr;
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    ++gDecoyLoggerCalls;
    return nullptr;
}

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::printf("usage: %s <libdettool_plugins.so> <stub libnvinfer.so.10>\n", argv[0]);
        return 2;
    }
    void* plugins = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (plugins == nullptr)
    {
        std::printf("FAIL: dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    auto getCreators = symbol<IPluginCreatorInterface* const* (*) (int32_t&)>(plugins, "getCreators");
    auto registerPlugins = symbol<int32_t (*)()>(plugins, "dettoolRegisterPlugins");
    if (gFailures != 0)
    {
        return 1;
    }
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    CHECK(nb == 4);

    // No libnvinfer yet: the decoys are all the process has.
    CHECK(registerPlugins() == -1);
    CHECK(gDecoyRegistryCalls == 1);
    logOneError(creators); // to stderr
    CHECK(gDecoyLoggerCalls == 1);

    void* stub = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    if (stub == nullptr)
    {
        std::printf("FAIL: dlopen %s: %s\n", argv[2], dlerror());
        return 1;
    }
    auto* registry = symbol<dettool_test::RecordingRegistry* (*) ()>(stub, "dettoolTestStubRegistry")();
    auto* logger = symbol<dettool_test::RecordingLogger* (*) ()>(stub, "dettoolTestStubLogger")();

    // libnvinfer.so.10 is loaded now: the earlier failed lookups were not kept, and the stub wins
    // over the global scope's decoys.
    CHECK(registerPlugins() == 4);
    CHECK(registry->creators.size() == 4);
    logOneError(creators);
    CHECK(logger->messages.size() == 1 && logger->messages[0].find("missing attribute") != std::string::npos);
    CHECK(gDecoyRegistryCalls == 1 && gDecoyLoggerCalls == 1);

    if (gFailures == 0)
    {
        std::printf("nvinfer_lookup: all checks passed\n");
    }
    return gFailures == 0 ? 0 : 1;
}
