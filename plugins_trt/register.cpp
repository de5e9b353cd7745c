/*
 * The registration unit of libdettool_plugins.so: the four creators, how TensorRT finds them,
 * and what the library was built with.
 *
 * Loading the library registers nothing. The creators reach TensorRT's registry one of two ways,
 * each registering a creator at most once:
 *  - IPluginRegistry::loadLibrary (tensorrt's registry.load_library, trtexec --dynamicPlugins):
 *    TensorRT calls getCreators() and registers what it returns;
 *  - dettoolRegisterPlugins(), called by an application that dlopened the library itself (Python
 *    ctypes after `import tensorrt`, a C++ program): registers, with the getPluginRegistry() of
 *    the libnvinfer loaded in the process, each creator the registry does not hold yet.
 * getCreators() leaves out the creators dettoolRegisterPlugins() registered, so the two can be
 * mixed in one process; dettool's Python loader (runtime/tensorrt_env.py) calls loadLibrary only
 * when the registry lacks dettool's creators.
 *
 * The library does not link libnvinfer, so one build serves TensorRT 10 and 11 (libnvinfer.so.10
 * or .11) as far as their IPluginV3 interfaces are the same.
 */
#include "batched_nms/batched_nms_plugin.h"
#include "modulated_deform_conv/modulated_deform_conv_plugin.h"
#include "multi_level_roi_align/multi_level_roi_align_plugin.h"
#include "ps_roi_align/ps_roi_align_plugin.h"

#include "build_info.h"

#include <NvInferVersion.h>
#include <cuda_runtime_api.h>
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

constexpr int32_t kNbCreators = 4;

IPluginCreatorInterface* creatorAt(int32_t i)
{
    static BatchedNmsPluginCreator sBatchedNms;
    static MultiLevelRoiAlignPluginCreator sMultiLevelRoiAlign;
    static ModulatedDeformConvPluginCreator sModulatedDeformConv;
    static PsRoiAlignPluginCreator sPsRoiAlign;
    static IPluginCreatorInterface* const kCreators[kNbCreators]
        = {&sBatchedNms, &sMultiLevelRoiAlign, &sModulatedDeformConv, &sPsRoiAlign};
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

//! Register the creators the registry does not hold yet; -1 when TensorRT is not loaded.
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
        auto* creator = static_cast<IPluginCreatorV3One*>(creatorAt(i));
        // Already there (loadLibrary registered this library, or an earlier call did): asking
        // TensorRT to register it again only logs an error.
        bool const present = registry->getCreator(creator->getPluginName(), kPluginVersion, kPluginNamespace) != nullptr;
        if (!state.registered[i] && !present && registry->registerCreator(*creator, kPluginNamespace))
        {
            state.registered[i] = true;
            ++count;
        }
    }
    return count;
}

} // namespace
} // namespace plugin
} // namespace dettool

//! For IPluginRegistry::loadLibrary: the creators TensorRT should register, i.e. all four unless
//! dettoolRegisterPlugins() has registered some of them already.
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

//! Register the creators the global registry does not hold yet (for a library the application
//! dlopened itself). Returns how many were newly registered, or -1 when no libnvinfer is loaded.
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
        + "\"plugins\": [\"DettoolBatchedNMS\", \"DettoolMultiLevelRoIAlign\", \"DettoolModulatedDeformConv\", "
          "\"DettoolPSRoIAlign\"], "
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
