/*
 * Test stand-in for TensorRT's IPluginRegistry::loadLibrary, built as libnvinfer_loadlibrary_stub.so:
 * its file name starts with "libnvinfer", so to libdettool_plugins.so's static initializer the
 * dlopen below looks like TensorRT loading the library.
 */
#include <NvInferRuntime.h>

#include <dlfcn.h>

using GetCreatorsFn = nvinfer1::IPluginCreatorInterface* const* (*) (int32_t&);

//! dlopen the plugin library and ask it for its creators, as loadLibrary does. Returns the handle
//! (nullptr on failure) and the number of creators in `nbCreators`.
extern "C" __attribute__((visibility("default"), noinline)) void* stubLoadLibrary(char const* path, int32_t* nbCreators)
{
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    *nbCreators = -1;
    if (handle != nullptr)
    {
        auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(handle, "getCreators"));
        if (getCreators != nullptr)
        {
            getCreators(*nbCreators);
        }
    }
    return handle;
}
