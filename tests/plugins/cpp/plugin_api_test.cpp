/*
 * ctest: libdettool_plugins.so through TensorRT's plugin interfaces, with no libnvinfer and no GPU.
 *
 * This executable stands in for TensorRT: it exports getPluginRegistry() (a registry that records
 * registrations and refuses duplicates) and getLogger(), which the library looks up in the
 * process, and it drives the creators and plugins as the builder and the ONNX parser do:
 * attributes as PluginFields, output shapes through an IExprBuilder, format combinations,
 * serialization round trips, shape checks, the workspace checks. Kernel launches are left to
 * tests/trt_engines and tests/gpu.
 *
 * Usage: dettool_plugin_api_test explicit|loadlibrary
 *   Loading registers nothing. explicit: dettoolRegisterPlugins() registers the four creators,
 *   then getCreators() offers none and a second call registers none; loadlibrary: the registry
 *   registers what getCreators() returns, as IPluginRegistry::loadLibrary does, then
 *   dettoolRegisterPlugins() registers none (no duplicate is even attempted).
 */
#include <NvInferRuntime.h>
#include <NvInferVersion.h>
#include "check.h"
#include "recording_registry.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;
using dettool_test::RecordingLogger;
using dettool_test::RecordingRegistry;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" int32_t dettoolRegisterPlugins();
extern "C" char const* dettoolPluginBuildInfo();

namespace
{

// ---------------------------------------------------------------------------------------------
// Stand-ins for TensorRT's registry, logger and shape expressions
// ---------------------------------------------------------------------------------------------

RecordingLogger& testLogger()
{
    static RecordingLogger logger;
    return logger;
}

RecordingRegistry& testRegistry()
{
    static RecordingRegistry registry;
    return registry;
}

//! A dimension expression: a known value, or unknown (a runtime dimension).
class Expr : public IDimensionExpr
{
    struct Impl : apiv::VDimensionExpr
    {
        bool known{false};
        int64_t value{0};
        bool isConstant() const override
        {
            return known;
        }
        int64_t getConstantValue() const override
        {
            return known ? value : INT64_MIN;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
    };
    Impl mState;

public:
    Expr(bool known, int64_t value)
    {
        mState.known = known;
        mState.value = value;
        mImpl = &mState;
    }
};

class ExprBuilder : public IExprBuilder
{
    struct Impl : apiv::VExprBuilder
    {
        std::deque<std::unique_ptr<Expr>> exprs;
        IDimensionExpr const* make(bool known, int64_t value)
        {
            exprs.push_back(std::make_unique<Expr>(known, value));
            return exprs.back().get();
        }
        IDimensionExpr const* constant(int64_t value) override
        {
            return make(true, value);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            if (!first.isConstant() || !second.isConstant())
            {
                return make(false, 0);
            }
            int64_t const a = first.getConstantValue();
            int64_t const b = second.getConstantValue();
            switch (op)
            {
            case DimensionOperation::kSUM: return make(true, a + b);
            case DimensionOperation::kPROD: return make(true, a * b);
            case DimensionOperation::kMAX: return make(true, a > b ? a : b);
            case DimensionOperation::kMIN: return make(true, a < b ? a : b);
            case DimensionOperation::kSUB: return make(true, a - b);
            case DimensionOperation::kEQUAL: return make(true, a == b);
            case DimensionOperation::kLESS: return make(true, a < b);
            case DimensionOperation::kFLOOR_DIV: return make(true, (a >= 0) == (b > 0) ? a / b : -((-a + b - 1) / b));
            case DimensionOperation::kCEIL_DIV: return make(true, (a + b - 1) / b);
            }
            return nullptr;
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }
    };
    Impl mState;

public:
    ExprBuilder()
    {
        mImpl = &mState;
    }
    IDimensionExpr const* known(int64_t v)
    {
        return mState.make(true, v);
    }
    IDimensionExpr const* unknown()
    {
        return mState.make(false, 0);
    }
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

IPluginCreatorV3One* creatorNamed(char const* name)
{
    int32_t n = 0;
    IPluginRegistry* registry = &testRegistry();
    IPluginCreatorInterface* const* all = registry->getAllCreators(&n);
    std::vector<IPluginCreatorInterface*> candidates(all, all + n);
    IPluginCreatorInterface* const* fresh = getCreators(n);
    candidates.insert(candidates.end(), fresh, fresh + n);
    for (IPluginCreatorInterface* c : candidates)
    {
        auto* v3 = static_cast<IPluginCreatorV3One*>(c);
        if (std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0 && std::strcmp(v3->getPluginName(), name) == 0)
        {
            return v3;
        }
    }
    return nullptr;
}

//! Fields as the ONNX parser builds them from node attributes (plus the two it looks plugins up by).
class Fields
{
public:
    Fields& ints(char const* name, std::vector<int32_t> values)
    {
        mInts.push_back(std::move(values));
        mFields.emplace_back(name, mInts.back().data(), PluginFieldType::kINT32, static_cast<int32_t>(mInts.back().size()));
        return *this;
    }
    Fields& real(char const* name, float value)
    {
        mFloats.push_back(value);
        mFields.emplace_back(name, &mFloats.back(), PluginFieldType::kFLOAT32, 1);
        return *this;
    }
    Fields& text(char const* name, char const* value)
    {
        mFields.emplace_back(name, value, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(value)));
        return *this;
    }
    PluginFieldCollection const* collection()
    {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
        return &mCollection;
    }

private:
    std::deque<std::vector<int32_t>> mInts;
    std::deque<float> mFloats;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

struct PluginParts
{
    IPluginV3* plugin{nullptr};
    IPluginV3OneCore* core{nullptr};
    IPluginV3OneBuild* build{nullptr};
    IPluginV3OneRuntime* runtime{nullptr};
};

PluginParts partsOf(IPluginV3* plugin)
{
    PluginParts p;
    p.plugin = plugin;
    if (plugin)
    {
        p.core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
        p.build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
        p.runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    }
    return p;
}

DynamicPluginTensorDesc desc(DataType type, std::vector<int64_t> dims = {})
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = TensorFormat::kLINEAR;
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i)
    {
        d.desc.dims.d[i] = dims[i];
    }
    d.min = d.max = d.opt = d.desc.dims;
    return d;
}

PluginTensorDesc runtimeDesc(DataType type, std::vector<int64_t> dims)
{
    return desc(type, std::move(dims)).desc;
}

//! Re-create a plugin from what it serializes, as engine deserialization does.
IPluginV3* roundTrip(IPluginCreatorV3One* creator, PluginParts const& parts)
{
    PluginFieldCollection const* fields = parts.runtime->getFieldsToSerialize();
    return creator->createPlugin("roundtrip", fields, TensorRTPhase::kRUNTIME);
}

bool sameFields(PluginFieldCollection const* a, PluginFieldCollection const* b)
{
    if (a->nbFields != b->nbFields)
    {
        return false;
    }
    for (int32_t i = 0; i < a->nbFields; ++i)
    {
        PluginField const& x = a->fields[i];
        PluginField const& y = b->fields[i];
        size_t const bytes = (x.type == PluginFieldType::kFLOAT32 || x.type == PluginFieldType::kINT32 ? 4 : 1) * x.length;
        if (std::strcmp(x.name, y.name) != 0 || x.type != y.type || x.length != y.length
            || std::memcmp(x.data, y.data, bytes) != 0)
        {
            return false;
        }
    }
    return true;
}

//! The float field `name` a plugin serializes (NaN when absent).
float serializedFloat(PluginParts const& parts, char const* name)
{
    PluginFieldCollection const* fields = parts.runtime->getFieldsToSerialize();
    for (int32_t i = 0; i < fields->nbFields; ++i)
    {
        PluginField const& field = fields->fields[i];
        if (std::strcmp(field.name, name) == 0 && field.type == PluginFieldType::kFLOAT32 && field.length == 1)
        {
            return *static_cast<float const*>(field.data);
        }
    }
    return NAN;
}

void checkCommon(IPluginCreatorV3One* creator, PluginParts const& parts, char const* name)
{
    CHECK(parts.core && parts.build && parts.runtime);
    CHECK(std::strcmp(parts.core->getPluginName(), name) == 0);
    CHECK(std::strcmp(parts.core->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(parts.core->getPluginNamespace(), "dettool") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "dettool") == 0);

    IPluginV3* copy = parts.plugin->clone();
    IPluginV3* attached = parts.runtime->attachToContext(nullptr);
    CHECK(copy && attached);
    IPluginV3* restored = roundTrip(creator, parts);
    CHECK(restored != nullptr);
    if (restored && copy)
    {
        PluginParts r = partsOf(restored);
        PluginParts c = partsOf(copy);
        CHECK(sameFields(r.runtime->getFieldsToSerialize(), parts.runtime->getFieldsToSerialize()));
        CHECK(sameFields(c.runtime->getFieldsToSerialize(), parts.runtime->getFieldsToSerialize()));
    }
    delete copy;
    delete attached;
    delete restored;
}

// ---------------------------------------------------------------------------------------------
// Per plugin
// ---------------------------------------------------------------------------------------------

void testBatchedNms()
{
    IPluginCreatorV3One* creator = creatorNamed("DettoolBatchedNMS");
    CHECK(creator != nullptr);
    if (!creator)
    {
        return;
    }
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names->nbFields == 3 && std::strcmp(names->fields[2].name, "max_output_boxes") == 0);

    Fields f;
    f.real("score_threshold", 0.05F).real("iou_threshold", 0.5F).ints("max_output_boxes", {100});
    f.text("plugin_namespace", "dettool").text("plugin_version", "1");
    PluginParts p = partsOf(creator->createPlugin("nms", f.collection(), TensorRTPhase::kBUILD));
    CHECK(p.plugin != nullptr);
    if (!p.plugin)
    {
        return;
    }
    checkCommon(creator, p, "DettoolBatchedNMS");
    CHECK(p.build->getNbOutputs() == 4);
    DataType in[2] = {DataType::kFLOAT, DataType::kFLOAT};
    DataType out[4];
    CHECK(p.build->getOutputDataTypes(out, 4, in, 2) == 0);
    CHECK(out[0] == DataType::kINT32 && out[1] == DataType::kFLOAT && out[2] == DataType::kFLOAT && out[3] == DataType::kINT32);

    ExprBuilder b;
    DimsExprs inputs[2];
    inputs[0].nbDims = 3;
    inputs[0].d[0] = b.unknown();
    inputs[0].d[1] = b.known(1000);
    inputs[0].d[2] = b.known(4);
    inputs[1].nbDims = 3;
    inputs[1].d[0] = inputs[0].d[0];
    inputs[1].d[1] = b.known(1000);
    inputs[1].d[2] = b.known(80);
    DimsExprs outputs[4];
    CHECK(p.build->getOutputShapes(inputs, 2, nullptr, 0, outputs, 4, b) == 0);
    CHECK(outputs[0].nbDims == 1 && outputs[0].d[0] == inputs[1].d[0]);
    CHECK(outputs[1].nbDims == 3 && outputs[1].d[1]->getConstantValue() == 100 && outputs[1].d[2]->getConstantValue() == 4);
    CHECK(outputs[2].nbDims == 2 && outputs[3].nbDims == 2 && outputs[3].d[1]->getConstantValue() == 100);

    DynamicPluginTensorDesc io[6] = {desc(DataType::kFLOAT, {-1, 1000, 4}), desc(DataType::kFLOAT, {-1, 1000, 80}),
        desc(DataType::kINT32), desc(DataType::kFLOAT), desc(DataType::kFLOAT), desc(DataType::kINT32)};
    for (int32_t pos = 0; pos < 6; ++pos)
    {
        CHECK(p.build->supportsFormatCombination(pos, io, 2, 4));
    }
    DynamicPluginTensorDesc wrong = io[0];
    wrong.desc.type = DataType::kHALF;
    std::swap(wrong, io[0]);
    CHECK(!p.build->supportsFormatCombination(0, io, 2, 4));
    std::swap(wrong, io[0]);
    io[2].desc.type = DataType::kFLOAT;
    CHECK(!p.build->supportsFormatCombination(2, io, 2, 4));
    io[2].desc.type = DataType::kINT32;
    size_t logged = testLogger().messages.size();
    CHECK(p.build->configurePlugin(io, 2, io + 2, 4) != 0); // no maximum batch: the workspace has no size
    CHECK(testLogger().messages.size() == logged + 1
        && testLogger().messages.back().find("no maximum shape of scores") != std::string::npos);
    io[0].max.d[0] = io[1].max.d[0] = 8;
    CHECK(p.build->configurePlugin(io, 2, io + 2, 4) == 0);
    CHECK(p.build->getWorkspaceSize(io, 2, io + 2, 4) >= size_t(8) * 1000 * 80 * 9);

    PluginTensorDesc ok[2] = {runtimeDesc(DataType::kFLOAT, {2, 1000, 4}), runtimeDesc(DataType::kFLOAT, {2, 1000, 80})};
    PluginTensorDesc outs[4] = {};
    CHECK(p.runtime->onShapeChange(ok, 2, outs, 4) == 0);
    PluginTensorDesc perClass[2] = {runtimeDesc(DataType::kFLOAT, {2, 1000, 80, 4}), ok[1]};
    CHECK(p.runtime->onShapeChange(perClass, 2, outs, 4) == 0);
    PluginTensorDesc bad[2] = {runtimeDesc(DataType::kFLOAT, {2, 999, 4}), ok[1]};
    CHECK(p.runtime->onShapeChange(bad, 2, outs, 4) != 0);
    PluginTensorDesc empty[2] = {runtimeDesc(DataType::kFLOAT, {0, 0, 4}), runtimeDesc(DataType::kFLOAT, {0, 0, 80})};
    CHECK(p.runtime->onShapeChange(empty, 2, outs, 4) == 0);

    // A null workspace is refused before any launch (so no GPU is needed here); an empty batch
    // needs none.
    void const* noInputs[2] = {};
    void* noOutputs[4] = {};
    logged = testLogger().messages.size();
    CHECK(p.runtime->enqueue(ok, outs, noInputs, noOutputs, nullptr, nullptr) != 0);
    CHECK(testLogger().messages.size() == logged + 1
        && testLogger().messages.back().find("enqueue without a workspace") != std::string::npos);
    CHECK(p.runtime->enqueue(empty, outs, noInputs, noOutputs, nullptr, nullptr) == 0);
    delete p.plugin;

    Fields missing;
    missing.real("score_threshold", 0.05F).ints("max_output_boxes", {100});
    logged = testLogger().messages.size();
    CHECK(creator->createPlugin("nms", missing.collection(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(testLogger().messages.size() == logged + 1
        && testLogger().messages.back().find("missing attribute iou_threshold") != std::string::npos);
    Fields negative;
    negative.real("score_threshold", 0.05F).real("iou_threshold", 0.5F).ints("max_output_boxes", {-1});
    CHECK(creator->createPlugin("nms", negative.collection(), TensorRTPhase::kBUILD) == nullptr);
}

void testMultiLevelRoiAlign()
{
    IPluginCreatorV3One* creator = creatorNamed("DettoolMultiLevelRoIAlign");
    CHECK(creator != nullptr);
    if (!creator)
    {
        return;
    }
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names->nbFields == 7 && std::strcmp(names->fields[6].name, "roi_scale_factor") == 0
        && names->fields[6].type == PluginFieldType::kFLOAT32);
    Fields f;
    f.ints("output_height", {7}).ints("output_width", {5}).ints("featmap_strides", {4, 8, 16, 32});
    f.ints("sampling_ratio", {0}).ints("finest_scale", {56}).ints("aligned", {1}).real("roi_scale_factor", 1.3F);
    f.text("plugin_namespace", "dettool").text("plugin_version", "1");
    PluginParts p = partsOf(creator->createPlugin("roi", f.collection(), TensorRTPhase::kBUILD));
    CHECK(p.plugin != nullptr);
    if (!p.plugin)
    {
        return;
    }
    checkCommon(creator, p, "DettoolMultiLevelRoIAlign");
    CHECK(serializedFloat(p, "roi_scale_factor") == 1.3F);
    CHECK(p.build->getNbOutputs() == 1);
    DataType in[5] = {DataType::kFLOAT, DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF};
    DataType out[1];
    CHECK(p.build->getOutputDataTypes(out, 1, in, 5) == 0 && out[0] == DataType::kHALF);
    CHECK(p.build->getOutputDataTypes(out, 1, in, 4) != 0); // one feature map short

    ExprBuilder b;
    DimsExprs inputs[5];
    inputs[0].nbDims = 2;
    inputs[0].d[0] = b.unknown();
    inputs[0].d[1] = b.known(5);
    for (int32_t l = 1; l < 5; ++l)
    {
        inputs[l].nbDims = 4;
        inputs[l].d[0] = b.unknown();
        inputs[l].d[1] = b.known(256);
        inputs[l].d[2] = b.known(200 >> l);
        inputs[l].d[3] = b.known(300 >> l);
    }
    DimsExprs outputs[1];
    CHECK(p.build->getOutputShapes(inputs, 5, nullptr, 0, outputs, 1, b) == 0);
    CHECK(outputs[0].nbDims == 4 && outputs[0].d[0] == inputs[0].d[0] && outputs[0].d[1]->getConstantValue() == 256
        && outputs[0].d[2]->getConstantValue() == 7 && outputs[0].d[3]->getConstantValue() == 5);

    for (DataType feature : {DataType::kFLOAT, DataType::kHALF})
    {
        DynamicPluginTensorDesc io[6] = {desc(DataType::kFLOAT, {-1, 5}), desc(feature, {1, 256, 100, 150}),
            desc(feature, {1, 256, 50, 75}), desc(feature, {1, 256, 25, 38}), desc(feature, {1, 256, 13, 19}),
            desc(feature, {-1, 256, 7, 5})};
        for (int32_t pos = 0; pos < 6; ++pos)
        {
            CHECK(p.build->supportsFormatCombination(pos, io, 5, 1));
        }
        CHECK(p.build->configurePlugin(io, 5, io + 5, 1) == 0);
        io[5].desc.type = feature == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
        CHECK(!p.build->supportsFormatCombination(5, io, 5, 1)); // output must follow the features
        io[0].desc.type = DataType::kHALF;
        CHECK(!p.build->supportsFormatCombination(0, io, 5, 1)); // rois are float32
    }

    PluginTensorDesc ok[5] = {runtimeDesc(DataType::kFLOAT, {300, 5}), runtimeDesc(DataType::kHALF, {2, 256, 100, 150}),
        runtimeDesc(DataType::kHALF, {2, 256, 50, 75}), runtimeDesc(DataType::kHALF, {2, 256, 25, 38}),
        runtimeDesc(DataType::kHALF, {2, 256, 13, 19})};
    PluginTensorDesc outs[1] = {runtimeDesc(DataType::kHALF, {300, 256, 7, 5})};
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) == 0);
    ok[0] = runtimeDesc(DataType::kFLOAT, {0, 5});
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) == 0); // no RoIs
    ok[3].dims.d[1] = 128;
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) != 0); // channels differ between levels
    delete p.plugin;

    Fields tooMany;
    tooMany.ints("output_height", {7}).ints("output_width", {7}).ints("featmap_strides", {1, 2, 4, 8, 16, 32, 64, 128, 256});
    tooMany.ints("sampling_ratio", {0}).ints("finest_scale", {56}).ints("aligned", {1});
    CHECK(creator->createPlugin("roi", tooMany.collection(), TensorRTPhase::kBUILD) == nullptr);
    Fields badAligned;
    badAligned.ints("output_height", {7}).ints("output_width", {7}).ints("featmap_strides", {4});
    badAligned.ints("sampling_ratio", {0}).ints("finest_scale", {56}).ints("aligned", {2});
    CHECK(creator->createPlugin("roi", badAligned.collection(), TensorRTPhase::kBUILD) == nullptr);

    // The fields of version 1 (no roi_scale_factor), as an engine serialized before the attribute
    // holds them: the plugin is version 1's, factor 1.
    Fields v1;
    v1.ints("output_height", {7}).ints("output_width", {7}).ints("featmap_strides", {4, 8});
    v1.ints("sampling_ratio", {2}).ints("finest_scale", {56}).ints("aligned", {1});
    PluginParts old = partsOf(creator->createPlugin("roi", v1.collection(), TensorRTPhase::kRUNTIME));
    CHECK(old.plugin != nullptr);
    if (old.plugin)
    {
        checkCommon(creator, old, "DettoolMultiLevelRoIAlign");
        CHECK(serializedFloat(old, "roi_scale_factor") == 1.0F);
        delete old.plugin;
    }
    for (float bad : {0.0F, -1.3F, NAN, INFINITY})
    {
        Fields badFactor;
        badFactor.ints("output_height", {7}).ints("output_width", {7}).ints("featmap_strides", {4});
        badFactor.ints("sampling_ratio", {0}).ints("finest_scale", {56}).ints("aligned", {1});
        badFactor.real("roi_scale_factor", bad);
        CHECK(creator->createPlugin("roi", badFactor.collection(), TensorRTPhase::kBUILD) == nullptr);
    }
    Fields intFactor; // the factor is a float attribute
    intFactor.ints("output_height", {7}).ints("output_width", {7}).ints("featmap_strides", {4});
    intFactor.ints("sampling_ratio", {0}).ints("finest_scale", {56}).ints("aligned", {1}).ints("roi_scale_factor", {1});
    CHECK(creator->createPlugin("roi", intFactor.collection(), TensorRTPhase::kBUILD) == nullptr);
}

void testModulatedDeformConv()
{
    IPluginCreatorV3One* creator = creatorNamed("DettoolModulatedDeformConv");
    CHECK(creator != nullptr);
    if (!creator)
    {
        return;
    }
    CHECK(creator->getFieldNames()->nbFields == 5);
    Fields f;
    f.ints("stride", {2, 1}).ints("padding", {1, 0}).ints("dilation", {2, 1}).ints("groups", {2});
    f.ints("deform_groups", {2}).text("plugin_namespace", "dettool").text("plugin_version", "1");
    PluginParts p = partsOf(creator->createPlugin("dcn", f.collection(), TensorRTPhase::kBUILD));
    CHECK(p.plugin != nullptr);
    if (!p.plugin)
    {
        return;
    }
    checkCommon(creator, p, "DettoolModulatedDeformConv");
    DataType in[5] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kHALF};
    DataType out[1];
    CHECK(p.build->getOutputDataTypes(out, 1, in, 5) == 0 && out[0] == DataType::kHALF);

    // input [B, 8, 13, 10], weight [6, 4, 3, 3]: Ho = (13 + 2 - 2*2 - 1) / 2 + 1 = 6, Wo = (10 - 2 - 1) / 1 + 1 = 8
    ExprBuilder b;
    DimsExprs inputs[5];
    inputs[0].nbDims = 4;
    inputs[0].d[0] = b.unknown();
    inputs[0].d[1] = b.known(8);
    inputs[0].d[2] = b.known(13);
    inputs[0].d[3] = b.known(10);
    inputs[3].nbDims = 4;
    inputs[3].d[0] = b.known(6);
    inputs[3].d[1] = b.known(4);
    inputs[3].d[2] = b.known(3);
    inputs[3].d[3] = b.known(3);
    inputs[1].nbDims = inputs[2].nbDims = 4;
    inputs[4].nbDims = 1;
    DimsExprs outputs[1];
    CHECK(p.build->getOutputShapes(inputs, 5, nullptr, 0, outputs, 1, b) == 0);
    CHECK(outputs[0].nbDims == 4 && outputs[0].d[0] == inputs[0].d[0] && outputs[0].d[1]->getConstantValue() == 6);
    CHECK(outputs[0].d[2]->getConstantValue() == 6 && outputs[0].d[3]->getConstantValue() == 8);
    inputs[0].d[2] = b.unknown(); // dynamic height: an expression TensorRT evaluates later
    CHECK(p.build->getOutputShapes(inputs, 5, nullptr, 0, outputs, 1, b) == 0 && !outputs[0].d[2]->isConstant());

    DynamicPluginTensorDesc io[6] = {desc(DataType::kHALF, {-1, 8, 13, 10}), desc(DataType::kHALF, {-1, 36, 6, 8}),
        desc(DataType::kHALF, {-1, 18, 6, 8}), desc(DataType::kHALF, {6, 4, 3, 3}), desc(DataType::kHALF, {6}),
        desc(DataType::kHALF, {-1, 6, 6, 8})};
    for (int32_t pos = 0; pos < 6; ++pos)
    {
        CHECK(p.build->supportsFormatCombination(pos, io, 5, 1));
    }
    CHECK(p.build->configurePlugin(io, 5, io + 5, 1) == 0);
    io[4].desc.type = DataType::kFLOAT;
    CHECK(!p.build->supportsFormatCombination(4, io, 5, 1)); // bias in another type
    io[0].desc.type = DataType::kINT32;
    CHECK(!p.build->supportsFormatCombination(0, io, 5, 1));
    io[0].desc.format = TensorFormat::kCHW32;
    io[0].desc.type = DataType::kHALF;
    CHECK(!p.build->supportsFormatCombination(0, io, 5, 1));

    PluginTensorDesc ok[5] = {runtimeDesc(DataType::kFLOAT, {2, 8, 13, 10}), runtimeDesc(DataType::kFLOAT, {2, 36, 6, 8}),
        runtimeDesc(DataType::kFLOAT, {2, 18, 6, 8}), runtimeDesc(DataType::kFLOAT, {6, 4, 3, 3}),
        runtimeDesc(DataType::kFLOAT, {6})};
    PluginTensorDesc outs[1] = {runtimeDesc(DataType::kFLOAT, {2, 6, 6, 8})};
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) == 0);
    ok[1].dims.d[2] = 7; // offset not at the output size
    ok[2].dims.d[2] = 7;
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) != 0);
    ok[1].dims.d[2] = ok[2].dims.d[2] = 6;
    ok[2].dims.d[1] = 9; // mask of one deform group
    CHECK(p.runtime->onShapeChange(ok, 5, outs, 1) != 0);
    delete p.plugin;

    Fields oneStride;
    oneStride.ints("stride", {1}).ints("padding", {1, 1}).ints("dilation", {1, 1}).ints("groups", {1}).ints("deform_groups", {1});
    CHECK(creator->createPlugin("dcn", oneStride.collection(), TensorRTPhase::kBUILD) == nullptr);
}

void testPsRoiAlign()
{
    IPluginCreatorV3One* creator = creatorNamed("DettoolPSRoIAlign");
    CHECK(creator != nullptr);
    if (!creator)
    {
        return;
    }
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names->nbFields == 3 && std::strcmp(names->fields[1].name, "spatial_scale") == 0
        && names->fields[1].type == PluginFieldType::kFLOAT32);
    Fields f;
    f.ints("output_size", {7}).real("spatial_scale", 0.0625F).ints("sampling_ratio", {2});
    f.text("plugin_namespace", "dettool").text("plugin_version", "1");
    PluginParts p = partsOf(creator->createPlugin("psroi", f.collection(), TensorRTPhase::kBUILD));
    CHECK(p.plugin != nullptr);
    if (!p.plugin)
    {
        return;
    }
    checkCommon(creator, p, "DettoolPSRoIAlign");
    CHECK(serializedFloat(p, "spatial_scale") == 0.0625F);
    CHECK(p.build->getNbOutputs() == 1);
    DataType in[2] = {DataType::kHALF, DataType::kFLOAT};
    DataType out[1];
    CHECK(p.build->getOutputDataTypes(out, 1, in, 2) == 0 && out[0] == DataType::kHALF);
    CHECK(p.build->getOutputDataTypes(out, 1, in, 1) != 0); // no rois

    // features [B, 10 * 49, H, W] -> [R, 10, 7, 7]
    ExprBuilder b;
    DimsExprs inputs[2];
    inputs[0].nbDims = 4;
    inputs[0].d[0] = b.unknown();
    inputs[0].d[1] = b.known(490);
    inputs[0].d[2] = b.unknown();
    inputs[0].d[3] = b.unknown();
    inputs[1].nbDims = 2;
    inputs[1].d[0] = b.unknown();
    inputs[1].d[1] = b.known(5);
    DimsExprs outputs[1];
    CHECK(p.build->getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, b) == 0);
    CHECK(outputs[0].nbDims == 4 && outputs[0].d[0] == inputs[1].d[0] && outputs[0].d[1]->getConstantValue() == 10
        && outputs[0].d[2]->getConstantValue() == 7 && outputs[0].d[3]->getConstantValue() == 7);
    inputs[0].d[1] = b.unknown(); // dynamic channels: an expression TensorRT evaluates later
    CHECK(p.build->getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, b) == 0 && !outputs[0].d[1]->isConstant());
    std::swap(inputs[0], inputs[1]); // rois first: the wrong order
    CHECK(p.build->getOutputShapes(inputs, 2, nullptr, 0, outputs, 1, b) != 0);

    for (DataType feature : {DataType::kFLOAT, DataType::kHALF})
    {
        DynamicPluginTensorDesc io[3] = {desc(feature, {-1, 490, 38, 50}), desc(DataType::kFLOAT, {-1, 5}),
            desc(feature, {-1, 10, 7, 7})};
        for (int32_t pos = 0; pos < 3; ++pos)
        {
            CHECK(p.build->supportsFormatCombination(pos, io, 2, 1));
        }
        CHECK(p.build->configurePlugin(io, 2, io + 2, 1) == 0);
        CHECK(p.build->getWorkspaceSize(io, 2, io + 2, 1) == 0);
        io[2].desc.type = feature == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
        CHECK(!p.build->supportsFormatCombination(2, io, 2, 1)); // output must follow the features
        io[1].desc.type = DataType::kHALF;
        CHECK(!p.build->supportsFormatCombination(1, io, 2, 1)); // rois are float32
        io[0].desc.format = TensorFormat::kCHW32;
        CHECK(!p.build->supportsFormatCombination(0, io, 2, 1));
    }
    DynamicPluginTensorDesc notDivisible[3] = {desc(DataType::kFLOAT, {-1, 491, 38, 50}),
        desc(DataType::kFLOAT, {-1, 5}), desc(DataType::kFLOAT, {-1, 10, 7, 7})};
    size_t logged = testLogger().messages.size();
    CHECK(p.build->configurePlugin(notDivisible, 2, notDivisible + 2, 1) != 0);
    CHECK(testLogger().messages.size() == logged + 1
        && testLogger().messages.back().find("C * k * k") != std::string::npos);

    PluginTensorDesc ok[2] = {runtimeDesc(DataType::kHALF, {2, 490, 38, 50}), runtimeDesc(DataType::kFLOAT, {300, 5})};
    PluginTensorDesc outs[1] = {runtimeDesc(DataType::kHALF, {300, 10, 7, 7})};
    CHECK(p.runtime->onShapeChange(ok, 2, outs, 1) == 0);
    ok[1] = runtimeDesc(DataType::kFLOAT, {0, 5});
    CHECK(p.runtime->onShapeChange(ok, 2, outs, 1) == 0); // no RoIs
    ok[0].dims.d[1] = 480;
    CHECK(p.runtime->onShapeChange(ok, 2, outs, 1) != 0); // 480 channels are not 49 per output channel
    ok[0].dims.d[1] = 490;
    ok[1] = runtimeDesc(DataType::kFLOAT, {300, 4});
    CHECK(p.runtime->onShapeChange(ok, 2, outs, 1) != 0);
    delete p.plugin;

    struct Bad
    {
        int32_t outputSize;
        float spatialScale;
        int32_t samplingRatio;
    };
    for (Bad const& bad : {Bad{0, 0.0625F, 0}, Bad{7, 0.0F, 0}, Bad{7, -1.0F, 0}, Bad{7, NAN, 0}, Bad{7, INFINITY, 0},
             Bad{7, 0.0625F, -1}})
    {
        Fields badFields;
        badFields.ints("output_size", {bad.outputSize}).real("spatial_scale", bad.spatialScale);
        badFields.ints("sampling_ratio", {bad.samplingRatio});
        CHECK(creator->createPlugin("psroi", badFields.collection(), TensorRTPhase::kBUILD) == nullptr);
    }
    Fields missing;
    missing.ints("output_size", {7}).ints("sampling_ratio", {0});
    logged = testLogger().messages.size();
    CHECK(creator->createPlugin("psroi", missing.collection(), TensorRTPhase::kBUILD) == nullptr);
    CHECK(testLogger().messages.size() == logged + 1
        && testLogger().messages.back().find("missing attribute spatial_scale") != std::string::npos);
}

} // namespace

//! The registry and logger the library looks up in the process (exported: ENABLE_EXPORTS).
extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    return &testRegistry();
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    return &testLogger();
}

int main(int argc, char** argv)
{
    std::string const mode = argc > 1 ? argv[1] : "explicit";
    if (mode != "explicit" && mode != "loadlibrary")
    {
        std::printf("usage: %s explicit|loadlibrary\n", argv[0]);
        return 2;
    }
    RecordingRegistry& registry = testRegistry();
    int32_t nb = -1;
    IPluginCreatorInterface* const* offered = getCreators(nb);
    CHECK(registry.creators.empty()); // loading registered nothing
    CHECK(nb == 4);
    if (mode == "explicit")
    {
        CHECK(dettoolRegisterPlugins() == 4);
        getCreators(nb);
        CHECK(nb == 0); // nothing left for a later loadLibrary to register twice
    }
    else
    {
        for (int32_t i = 0; i < nb; ++i)
        {
            CHECK(registry.registerCreator(*offered[i], "dettool"));
        }
    }
    CHECK(dettoolRegisterPlugins() == 0);
    CHECK(registry.creators.size() == 4 && registry.refused == 0);
    for (std::string const& ns : registry.namespaces)
    {
        CHECK(ns == "dettool");
    }

    std::string const info = dettoolPluginBuildInfo();
    std::string const version = "\"tensorrt_version\": \"" + std::to_string(NV_TENSORRT_MAJOR) + "."
        + std::to_string(NV_TENSORRT_MINOR) + "." + std::to_string(NV_TENSORRT_PATCH) + "\"";
    CHECK(info.find(version) != std::string::npos);
    CHECK(info.find("\"cuda_architectures\": \"") != std::string::npos);

    testBatchedNms();
    testMultiLevelRoiAlign();
    testModulatedDeformConv();
    testPsRoiAlign();
    if (gFailures == 0)
    {
        std::printf("plugin_api (%s): all checks passed; build info: %s\n", mode.c_str(), info.c_str());
    }
    return gFailures == 0 ? 0 : 1;
}
