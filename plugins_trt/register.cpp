/*
 * The registration unit of libdettool_plugins.so: the three creators, how TensorRT finds them,
 * and what the library was built with.
 *
 * Two ways to load the library, both supported, never registering a creator twice:
 *  - dlopen by the application (Python ctypes.CDLL after `import tensorrt`, trtexec
 *    --staticPlugins, a C++ program): a static initializer registers the creators with the
 *    getPluginRegistry() of the libnvinfer already loaded in the process;
 *  - IPluginRegistry::loadLibrary (tensorrt's registry.load_library, trtexec --dynamicPlugins):
 *    TensorRT calls getCreators() and registers what it returns. The static initializer sees
 *    libnvinfer on its call stack and leaves the registration to TensorRT (loadLibrary fails if a
 *    creator it is handed is already registered); should that check miss, getCreators() returns
 *    only the creators not registered statically.
 * DETTOOL_TRT_PLUGIN_NO_STATIC_REGISTRATION=1 switches the static registration off altogether.
 *
 * The library does not link libnvinfer, so one build serves TensorRT 10 and 11 (libnvinfer.so.10
 * or .11) as far as their IPluginV3 interfaces are the same.
 */
#include "batched_nms/batched_nms_plugin.h"
#include "modulated_deform_conv/modulated_deform_conv_plugin.h"
#include "multi_level_roi_align/multi_level_roi_align_plugin.h"

#include "build_info.h"

#include <NvInferVersion.h>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <execinfo.h>
#include <mutex>
#include <string>

using namespace nvinfer1;

#define DETTOOL_EXPORT extern "C" __attribute__((visibility("default")))
#define DETTOOL_STRINGIFY_(x) #x
#define DETTOOL_STRINGIFY(x) DETTOOL_STRINGIFY_(x)

namespace dettool
{
namespace plugin
{
namespace
{

constexpr int32_t kNbCreators = 3;

IPluginCreatorInterface* creatorAt(int32_t i)
{
    static BatchedNmsPluginCreator sBatchedNms;
    static MultiLevelRoiAlignPluginCreator sMultiLevelRoiAlign;
    static ModulatedDeformConvPluginCreator sModulatedDeformConv;
    static IPluginCreatorInterface* const kCreators[kNbCreators] = {&sBatchedNms, &sMultiLevelRoiAlign, &sModulatedDeformConv};
    return kCreators[i];
}

//! Which creators this library registered with the process's global registry itself.
struct Registrations
{
    std::mutex mutex;
    bool registered[kNbCreators] = {};
};

Registrations& registrations()
{
    static Registrations sRegistrations;
    return sRegistrations;
}

//! Register the creators not yet registered by this library; -1 when TensorRT is not loaded.
int32_t registerWithGlobalRegistry()
{
    GetPluginRegistryFn const getRegistry = findGetPluginRegistry();
    IPluginRegistry* registry = getRegistry ? getRegistry() : nullptr;
    if (registry == nullptr)
    {
        return -1;
    }
    Registrations& state = registrations();
    std::lock_guard<std::mutex> lock(state.mutex);
    int32_t count = 0;
    for (int32_t i = 0; i < kNbCreators; ++i)
    {
        if (!state.registered[i] && registry->registerCreator(*creatorAt(i), kPluginNamespace))
        {
            state.registered[i] = true;
            ++count;
        }
    }
    return count;
}

//! Whether a libnvinfer* (full, lean or dispatch runtime) is on the call stack: TensorRT's
//! IPluginRegistry::loadLibrary is loading this library and will register getCreators() itself.
bool calledFromTensorRt() noexcept
{
    void* frames[64];
    int32_t const depth = backtrace(frames, 64);
    for (int32_t i = 1; i < depth; ++i)
    {
        Dl_info info;
        if (dladdr(frames[i], &info) != 0 && info.dli_fname != nullptr)
        {
            char const* slash = std::strrchr(info.dli_fname, '/');
            if (std::strncmp(slash ? slash + 1 : info.dli_fname, "libnvinfer", 10) == 0)
            {
                return true;
            }
        }
    }
    return false;
}

//! The static initializer: registration at load time, unless TensorRT is loading the library or
//! DETTOOL_TRT_PLUGIN_NO_STATIC_REGISTRATION is set.
struct StaticRegistration
{
    StaticRegistration()
    {
        char const* off = std::getenv("DETTOOL_TRT_PLUGIN_NO_STATIC_REGISTRATION");
        bool const disabled = off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0;
        if (!disabled && !calledFromTensorRt())
        {
            registerWithGlobalRegistry();
        }
    }
};

StaticRegistration const gStaticRegistration;

} // namespace
} // namespace plugin
} // namespace dettool

//! For IPluginRegistry::loadLibrary: the creators TensorRT should register, i.e. those the static
//! initializer has not registered itself (all three when TensorRT was not loaded before this
//! library, or with DETTOOL_TRT_PLUGIN_NO_STATIC_REGISTRATION=1).
DETTOOL_EXPORT IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    using namespace dettool::plugin;
    static IPluginCreatorInterface* sList[kNbCreators];
    Registrations& state = registrations();
    std::lock_guard<std::mutex> lock(state.mutex);
    nbCreators = 0;
    for (int32_t i = 0; i < kNbCreators; ++i)
    {
        if (!state.registered[i])
        {
            sList[nbCreators++] = creatorAt(i);
        }
    }
    return sList;
}

//! TensorRT passes its logger finder to plugin libraries of version-compatible engines.
DETTOOL_EXPORT void setLoggerFinder(ILoggerFinder* finder)
{
    dettool::plugin::setLoggerFinder(finder);
}

//! Register the creators with the global registry now (for a library loaded before TensorRT).
//! Returns how many were newly registered, or -1 when no libnvinfer is loaded.
DETTOOL_EXPORT int32_t dettoolRegisterPlugins()
{
    return dettool::plugin::registerWithGlobalRegistry();
}

//! JSON: the plugins (name, namespace, version) and the TensorRT headers, CUDA toolkit, compiler
//! and GPU architectures the library was built with.
DETTOOL_EXPORT char const* dettoolPluginBuildInfo()
{
    static std::string const kInfo = std::string("{")
        + "\"library\": \"dettool_plugins\", "
        + "\"plugins\": [\"DettoolBatchedNMS\", \"DettoolMultiLevelRoIAlign\", \"DettoolModulatedDeformConv\"], "
        + "\"plugin_namespace\": \"" + dettool::plugin::kPluginNamespace + "\", "
        + "\"plugin_version\": \"" + dettool::plugin::kPluginVersion + "\", "
        + "\"tensorrt_version\": \"" DETTOOL_STRINGIFY(NV_TENSORRT_MAJOR) "." DETTOOL_STRINGIFY(NV_TENSORRT_MINOR) "."
          DETTOOL_STRINGIFY(NV_TENSORRT_PATCH) "\", "
        + "\"cuda_version\": \"" DETTOOL_BUILD_CUDA_COMPILER_VERSION "\", "
        + "\"cudart_api_version\": " DETTOOL_STRINGIFY(CUDART_VERSION) ", "
        + "\"cuda_architectures\": \"" DETTOOL_BUILD_CUDA_ARCHITECTURES "\", "
        + "\"cxx_compiler\": \"" DETTOOL_BUILD_CXX_COMPILER "\", "
        + "\"build_type\": \"" DETTOOL_BUILD_TYPE "\"}";
    return kInfo.c_str();
}
