// Navigating a loaded checkpoint: paths, tensors, state_dicts, training fields.
#include <fmt/format.h>

#include <unordered_set>

#include "torchless/core/error.h"
#include "torchless/formats/torch_file.h"

namespace torchless::torch_file {

using pickle::Kind;
using pickle::ValuePtr;

namespace {

std::string key_text(const pickle::Value& key) {
  switch (key.kind) {
    case Kind::kStr:
      return key.text;
    case Kind::kInt:
      return fmt::format("{}", key.integer);
    case Kind::kBigInt:
      return key.text;
    case Kind::kBool:
      return key.boolean ? "True" : "False";
    case Kind::kNone:
      return "None";
    default:
      return key.repr(60);
  }
}

std::string join(const std::string& path, const std::string& part) {
  return path.empty() ? part : path + "/" + part;
}

// The children of a node as (path component, child), in file order. Salvaged records are
// walked through their state in place, as their attributes.
void children(const pickle::Value& v,
              const std::function<void(const std::string&, const ValuePtr&)>& f) {
  switch (v.kind) {
    case Kind::kDict:
      for (const auto& [k, val] : v.entries) f(key_text(*k), val);
      return;
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kSet:
    case Kind::kFrozenSet:
      for (size_t i = 0; i < v.items.size(); ++i) f(fmt::format("{}", i), v.items[i]);
      return;
    case Kind::kSparseTensor: {
      bool coo = v.type_name == "torch.sparse_coo";
      static const char* kCoo[] = {"indices", "values"};
      static const char* kCompressed[] = {"compressed_indices", "plain_indices", "values"};
      for (size_t i = 0; i < v.items.size(); ++i) {
        const char* name = coo ? (i < 2 ? kCoo[i] : nullptr) : (i < 3 ? kCompressed[i] : nullptr);
        f(name ? name : fmt::format("{}", i), v.items[i]);
      }
      return;
    }
    case Kind::kObject: {
      if (v.args && !v.args->items.empty()) f(v.newobj ? "__newargs__" : "__args__", v.args);
      const auto& s = v.state;
      if (s) {
        if (s->kind == Kind::kDict) {
          for (const auto& [k, val] : s->entries) f(key_text(*k), val);
        } else if (s->kind == Kind::kTuple && s->items.size() == 2 &&
                   (s->items[0]->kind == Kind::kDict || s->items[0]->kind == Kind::kNone)) {
          for (const auto& part : s->items) {
            if (part->kind == Kind::kDict) {
              for (const auto& [k, val] : part->entries) f(key_text(*k), val);
            }
          }
        } else {
          f("__state__", s);
        }
      }
      for (size_t i = 0; i < v.items.size(); ++i) f(fmt::format("{}", i), v.items[i]);
      for (const auto& [k, val] : v.entries) f(key_text(*k), val);
      return;
    }
    default:
      return;
  }
}

bool is_tensor_dict(const ValuePtr& v) {
  if (!v || !v->is_dict() || v->entries.empty()) return false;
  for (const auto& [k, val] : v->entries) {
    if (val->is_tensor()) return true;
  }
  return false;
}

}  // namespace

const Tensor* StateDict::find(std::string_view name) const {
  for (const auto& e : entries) {
    if (e.name == name) return &e.tensor;
  }
  return nullptr;
}

const Tensor& StateDict::at(std::string_view name) const {
  if (const Tensor* t = find(name)) return *t;
  std::string near;
  for (const auto& e : entries) {
    if (near.size() > 200) break;
    near += (near.empty() ? "" : ", ") + e.name;
  }
  fail("state_dict has no tensor '{}' (it has {} entries: {}{})", name, entries.size(), near,
       near.size() > 200 ? ", ..." : "");
}

void TorchCheckpoint::walk(
    const std::function<void(const std::string& path, const ValuePtr& node)>& visit) const {
  if (!root_) return;
  std::unordered_set<const pickle::Value*> seen;
  // Iterative pre-order: an explicit stack keeps hostile depth off the call stack.
  std::vector<std::pair<std::string, ValuePtr>> stack;
  stack.emplace_back("", root_);
  while (!stack.empty()) {
    std::string path = std::move(stack.back().first);
    ValuePtr node = std::move(stack.back().second);
    stack.pop_back();
    bool container = node->kind == Kind::kDict || node->kind == Kind::kList ||
                     node->kind == Kind::kTuple || node->kind == Kind::kObject ||
                     node->kind == Kind::kSet || node->kind == Kind::kFrozenSet ||
                     node->kind == Kind::kSparseTensor || node->kind == Kind::kTensor ||
                     node->kind == Kind::kScalar;
    if (container && !seen.insert(node.get()).second) continue;
    visit(path, node);
    std::vector<std::pair<std::string, ValuePtr>> kids;
    children(*node, [&](const std::string& part, const ValuePtr& child) {
      kids.emplace_back(join(path, part), child);
    });
    for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.push_back(std::move(*it));
  }
}

std::vector<NamedTensor> TorchCheckpoint::tensors() const {
  std::vector<NamedTensor> out;
  walk([&](const std::string& path, const ValuePtr& node) {
    // numpy scalars (Kind::kScalar) are values, not tensors.
    if (node->kind == Kind::kTensor && node->tensor && node->tensor->bound) {
      out.push_back({path, node->tensor->tensor, node});
    }
  });
  return out;
}

ValuePtr TorchCheckpoint::find(std::string_view path) const {
  ValuePtr node = root_;
  while (node && !path.empty()) {
    auto slash = path.find('/');
    std::string part(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    ValuePtr next;
    children(*node, [&](const std::string& name, const ValuePtr& child) {
      if (!next && name == part) next = child;
    });
    node = next;
  }
  return node;
}

StateDict TorchCheckpoint::state_dict(std::string_view path) const {
  std::string prefix;
  std::string_view dict_path = path;
  auto last_slash = path.rfind('/');
  std::string_view last = last_slash == std::string_view::npos ? path : path.substr(last_slash + 1);
  if (!last.empty() && last.back() == '.') {
    prefix = std::string(last);
    dict_path =
        last_slash == std::string_view::npos ? std::string_view() : path.substr(0, last_slash);
  }
  ValuePtr dict;
  if (dict_path.empty()) {
    // Named entries first: a training checkpoint may hold a stray tensor at its root.
    if (root_ && root_->is_dict()) {
      for (const char* name :
           {"state_dict", "model_state_dict", "model", "net", "module", "network"}) {
        if (auto v = root_->get(name); is_tensor_dict(v)) {
          dict = v;
          break;
        }
      }
    }
    if (!dict && is_tensor_dict(root_)) dict = root_;
    if (!dict) {
      fail(
          "{}: no state_dict found: the root is a {} without tensors, and none of "
          "'state_dict', 'model_state_dict', 'model', 'net', 'module', 'network' holds one",
          name_, root_ ? std::string(pickle::kind_name(root_->kind)) : "nothing");
    }
  } else {
    dict = find(dict_path);
    if (!dict) fail("{}: no entry at path '{}'", name_, dict_path);
    if (!dict->is_dict()) {
      fail("{}: '{}' is a {}, not a state_dict", name_, dict_path, pickle::kind_name(dict->kind));
    }
  }
  StateDict out;
  for (const auto& [k, v] : dict->entries) {
    if (!v->is_tensor() || !v->tensor->bound || k->kind != Kind::kStr) continue;
    if (!prefix.empty()) {
      if (!k->text.starts_with(prefix)) continue;
      out.entries.push_back({k->text.substr(prefix.size()), v->tensor->tensor});
    } else {
      out.entries.push_back({k->text, v->tensor->tensor});
    }
  }
  if (!prefix.empty() && out.empty()) {
    fail("{}: no state_dict entry starts with '{}'", name_, prefix);
  }
  return out;
}

std::optional<int64_t> TorchCheckpoint::epoch() const {
  if (!root_ || !root_->is_dict()) return std::nullopt;
  auto v = root_->get("epoch");
  return v ? v->as_int() : std::nullopt;
}

std::optional<double> TorchCheckpoint::loss() const {
  if (!root_ || !root_->is_dict()) return std::nullopt;
  auto v = root_->get("loss");
  return v ? v->as_double() : std::nullopt;
}

namespace {
ValuePtr optimizer_of(const ValuePtr& root) {
  if (!root || !root->is_dict()) return nullptr;
  for (const char* name : {"optimizer_state_dict", "optimizer", "optim", "optimizer_state"}) {
    if (auto v = root->get(name); v && v->is_dict()) return v;
  }
  return nullptr;
}
}  // namespace

ValuePtr TorchCheckpoint::optimizer_state() const {
  auto opt = optimizer_of(root_);
  return opt ? opt->get("state") : nullptr;
}

ValuePtr TorchCheckpoint::param_groups() const {
  auto opt = optimizer_of(root_);
  return opt ? opt->get("param_groups") : nullptr;
}

}  // namespace torchless::torch_file
