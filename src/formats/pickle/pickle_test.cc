#include "torchless/formats/pickle.h"

#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"

namespace torchless::pickle {
namespace {

// The whole of a string literal, embedded NULs included.
template <size_t N>
std::string P(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

Buffer bytes_of(std::string_view s) {
  return Buffer::copy_of(s);
}

ReadResult read_str(std::string_view s, bool salvage = false) {
  ReadOptions o;
  o.salvage = salvage;
  o.what = "test.pkl";
  return read(bytes_of(s), o);
}

std::string error_of(std::string_view s, bool salvage = false) {
  try {
    read_str(s, salvage);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << (haystack)

// ---- values ------------------------------------------------------------------------------------

TEST(PickleReader, ReadsProtocol2DictOfScalars) {
  // {'a': 1, 'b': [True, None, 2.5]} as pickle.dumps(protocol=2) writes it.
  auto r =
      read_str(std::string("\x80\x02}q\x00(X\x01\x00\x00\x00"
                           "aq\x01K\x01X\x01\x00\x00\x00"
                           "bq\x02]q\x03(\x88NG@\x04\x00\x00\x00\x00\x00\x00"
                           "eu.",
                           42));
  ASSERT_TRUE(r.value->is_dict());
  EXPECT_EQ(r.protocol, 2);
  EXPECT_EQ(r.value->get("a")->as_int(), 1);
  auto b = r.value->get("b");
  ASSERT_EQ(b->items.size(), 3u);
  EXPECT_TRUE(b->items[0]->boolean);
  EXPECT_EQ(b->items[1]->kind, Kind::kNone);
  EXPECT_EQ(b->items[2]->real, 2.5);
}

TEST(PickleReader, DecodesBigIntsExactly) {
  // LONG1 of 2**100 (13 bytes) and of -(2**70) (9 bytes), LONG text form.
  std::string two100("\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10", 15);
  std::string neg70("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0", 11);
  auto r = read_str("\x80\x02" + two100 + neg70 + "L-12345678901234567890123L\n\x87.");
  ASSERT_EQ(r.value->items.size(), 3u);
  EXPECT_EQ(r.value->items[0]->kind, Kind::kBigInt);
  EXPECT_EQ(r.value->items[0]->text, "1267650600228229401496703205376");
  EXPECT_EQ(r.value->items[1]->text, "-1180591620717411303424");
  EXPECT_EQ(r.value->items[2]->text, "-12345678901234567890123");
}

TEST(PickleReader, SignExtendsShortLong1) {
  auto r = read_str(P("\x80\x02\x8a\x02\x00\x80."));  // -32768
  EXPECT_EQ(r.value->as_int(), -32768);
}

TEST(PickleReader, MemoSharesObjectsInsteadOfCopying) {
  // l = []; [l, l] via BINPUT/BINGET.
  auto r =
      read_str(P("\x80\x02](]q\x00h\x00"
                 "e."));
  ASSERT_EQ(r.value->items.size(), 2u);
  EXPECT_EQ(r.value->items[0].get(), r.value->items[1].get());
}

TEST(PickleReader, DuplicateDictKeysFollowPythonEquality) {
  // {1: 'a', 1.0: 'b', True: 'c'} == {1: 'c'}
  auto r =
      read_str(std::string("\x80\x02}(K\x01X\x01\x00\x00\x00"
                           "aG?\xf0\x00\x00\x00\x00\x00\x00"
                           "X\x01\x00\x00\x00"
                           "b\x88X\x01\x00\x00\x00"
                           "cu.",
                           36));
  ASSERT_EQ(r.value->entries.size(), 1u);
  EXPECT_EQ(r.value->entries[0].first->kind, Kind::kInt);
  EXPECT_EQ(r.value->entries[0].second->text, "c");
}

TEST(PickleReader, RefusesUnhashableDictKeys) {
  EXPECT_CONTAINS(error_of("\x80\x02}]K\x01s."), "unhashable type 'list'");
}

TEST(PickleReader, ReadsProtocol0TextOpcodes) {
  // (dp0\nS'k'\np1\nF1.5\nsV\u00e9\np2\nI01\ns. : {'k': 1.5, 'é': True}
  auto r = read_str("(dp0\nS'k'\np1\nF1.5\nsV\\u00e9\np2\nI01\ns.");
  EXPECT_EQ(r.value->get("k")->real, 1.5);
  EXPECT_EQ(r.value->get("\xc3\xa9")->kind, Kind::kBool);
}

// ---- code execution attempts -------------------------------------------------------------------

TEST(PickleReader, RejectsReduceOfNonAllowlistedGlobal) {
  for (const char* g :
       {"os\nsystem", "posix\nsystem", "nt\nsystem", "builtins\neval", "builtins\nexec",
        "__builtin__\ngetattr", "subprocess\nPopen", "webbrowser\nopen", "builtins\n__import__",
        "runpy\nrun_path", "operator\nattrgetter", "torch.serialization\nload"}) {
    std::string p = std::string(
                        "\x80\x02"
                        "c") +
                    g + "\nX\x02\x00\x00\x00id\x85R.";
    std::string name(g);
    name[name.find('\n')] = '.';
    auto m = error_of(p);
    EXPECT_CONTAINS(m, "global '" + name + "'");
    EXPECT_CONTAINS(m, "not allowlisted");
    // Salvage mode keeps unknown classes as records, but never these.
    EXPECT_CONTAINS(error_of(p, true), "refused even in salvage mode");
  }
}

TEST(PickleReader, RejectsLookalikeNames) {
  for (const char* g : {"torch._utils \n_rebuild_tensor", "torch._utils\n_rebuild_tensor ",
                        "torch\n_utils._rebuild_tensor", "Torch._utils\n_rebuild_tensor_v2",
                        "collections\nOrderedDict.__init__", "builtins\nset.mro"}) {
    std::string p = std::string(
                        "\x80\x02"
                        "c") +
                    g + "\n).";
    EXPECT_CONTAINS(error_of(p), "is not allowlisted");
  }
}

TEST(PickleReader, RejectsDangerousGlobalThroughEveryOpcode) {
  // STACK_GLOBAL (protocol 4), INST and OBJ (protocol 0/1), NEWOBJ.
  EXPECT_CONTAINS(error_of("\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R."), "os.system");
  EXPECT_CONTAINS(error_of("(S'id'\nios\nsystem\n."), "os.system");
  EXPECT_CONTAINS(error_of("(cos\nsystem\nS'id'\no."), "os.system");
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "cos\nsystem\n)\x81."),
                  "os.system");
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "cbuiltins\neval\n}b."),
                  "builtins.eval");
}

TEST(PickleReader, RefusesExtensionRegistryAndOutOfBandBuffers) {
  EXPECT_CONTAINS(error_of("\x80\x02\x82\x01."), "extension code 1");
  EXPECT_CONTAINS(error_of("\x80\x05\x97."), "out-of-band");
  EXPECT_CONTAINS(error_of(P("\x80\x02X\x01\x00\x00\x00"
                             "aQ.")),
                  "no persistent_load");
}

TEST(PickleReader, RefusesCallingTypeTags) {
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "c__builtin__\nlist\n)R."),
                  "cannot be called");
  EXPECT_CONTAINS(error_of("\x80\x02N)R."), "cannot call a None");
}

TEST(PickleReader, DefaultdictFactoryMustBeABuiltinType) {
  auto ok = read_str(
      "\x80\x02"
      "ccollections\ndefaultdict\nc__builtin__\nlist\n\x85R.");
  EXPECT_EQ(ok.value->type_name, "collections.defaultdict");
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "ccollections\ndefaultdict\ncos\ngetcwd\n\x85R."),
                  "os.getcwd");
}

// ---- salvage mode ------------------------------------------------------------------------------

TEST(PickleReader, SalvageKeepsUnknownClassesAsInertRecords) {
  // argparse.Namespace via NEWOBJ + BUILD, as torch.save writes it.
  std::string p =
      P("\x80\x02"
        "cargparse\nNamespace\n)\x81}X\x02\x00\x00\x00lrG?\xb9\x99\x99\x99"
        "\x99\x99\x9as"
        "b.");
  EXPECT_CONTAINS(error_of(p), "argparse.Namespace");
  auto r = read_str(p, /*salvage=*/true);
  EXPECT_EQ(r.value->kind, Kind::kObject);
  EXPECT_EQ(r.value->type_name, "argparse.Namespace");
  EXPECT_TRUE(r.value->newobj);
  EXPECT_EQ(r.value->state->get("lr")->real, 0.1);
  EXPECT_EQ(r.salvaged, std::vector<std::string>{"argparse.Namespace"});
}

// ---- malformed input ---------------------------------------------------------------------------

TEST(PickleReader, EveryTruncationIsAnError) {
  std::string p(
      "\x80\x02}q\x00(X\x01\x00\x00\x00"
      "aq\x01K\x01X\x01\x00\x00\x00"
      "bq\x02]q\x03(\x88NG@\x04\x00\x00\x00\x00\x00\x00"
      "eu.",
      42);
  for (size_t cut = 0; cut < p.size(); ++cut) {
    auto m = error_of(p.substr(0, cut));
    EXPECT_NE(m, "(accepted)") << "cut at " << cut;
    EXPECT_CONTAINS(m, "test.pkl");
  }
}

TEST(PickleReader, HugeLengthWithTinyInputIsAnErrorNotAnAllocation) {
  auto m = error_of(
      "\x80\x02X\xff\xff\xff\x7f"
      "abc.");
  EXPECT_CONTAINS(m, "offset 2 (BINUNICODE)");
  EXPECT_CONTAINS(m, "only 4 left");
  EXPECT_CONTAINS(error_of(std::string("\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", 12)),
                  "BINBYTES8");
  EXPECT_CONTAINS(error_of(std::string("\x80\x04\x95\x00\x00\x00\x00\x01\x00\x00\x00N.", 13)),
                  "FRAME");
}

TEST(PickleReader, MemoGetOfMissingKeyIsAnError) {
  EXPECT_CONTAINS(error_of("\x80\x02h\x07."), "memo key 7 was never stored");
  EXPECT_CONTAINS(error_of("\x80\x02j\xff\xff\xff\xff."), "memo key 4294967295");
}

TEST(PickleReader, StackMisuseIsAnError) {
  EXPECT_CONTAINS(error_of("\x80\x02."), "stack underflow");
  EXPECT_CONTAINS(error_of("\x80\x02NN."), "leaves 1 item");
  EXPECT_CONTAINS(error_of("\x80\x02(N."), "unclosed MARK");
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "N(a."),
                  "past the last MARK");
  EXPECT_CONTAINS(error_of("\x80\x02"
                           "e."),
                  "no MARK");
  EXPECT_CONTAINS(error_of("\x80\x02N"), "without STOP");
  EXPECT_CONTAINS(error_of("\x80\x02N.N"), "after STOP");
  EXPECT_CONTAINS(error_of("\x80\x02]NNs."), "SETITEM on a list");
  EXPECT_CONTAINS(error_of("\x80\x02}Na."), "APPEND on a dict");
  EXPECT_CONTAINS(error_of("\x80\x02N\x80\x02."), "PROTO must be the first");
  EXPECT_CONTAINS(error_of("\x80\x06N."), "protocol 6");
  EXPECT_CONTAINS(error_of("\x80\x02\xff."), "unknown opcode byte 0xff");
}

TEST(PickleReader, OpcodesMayNotStraddleFrames) {
  // FRAME of 2 bytes, then BININT1 5 split across its end.
  EXPECT_CONTAINS(error_of(std::string("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00NK\x05.", 15)),
                  "crosses the end of its FRAME");
}

TEST(PickleReader, RefusesSelfReferencingValues) {
  auto m =
      error_of(P("\x80\x02]q\x00h\x00"
                 "a."));
  EXPECT_CONTAINS(m, "reference cycle");
}

TEST(PickleReader, DeepNestingIsALimitErrorNotAStackOverflow) {
  const int n = 100000;
  std::string nested = "\x80\x02";
  for (int i = 0; i < n; ++i) nested += "]";
  for (int i = 0; i < n - 1; ++i) nested += "a";
  nested += ".";
  EXPECT_THROW(read_str(nested), LimitError);
  std::string marks = "\x80\x02" + std::string(n, '(') + "N.";
  EXPECT_CONTAINS(error_of(marks), "unclosed MARK");
  // Deep garbage that is popped (unreachable from the result) is refused as well.
  std::string popped = nested.substr(0, nested.size() - 1) + "0N.";
  EXPECT_THROW(read_str(popped), LimitError);
}

TEST(PickleReader, ItemLimitsAreEnforced) {
  ReadOptions o;
  o.limits.max_items = 10;
  std::string many = "\x80\x02](" + std::string(20, 'N') + "e.";
  EXPECT_THROW(read(bytes_of(many), o), LimitError);
}

// ---- the writer --------------------------------------------------------------------------------

ValuePtr sample_tree() {
  auto d = Value::dict();
  d->set_item(Value::from_str("int"), Value::from_int(-5));
  d->set_item(Value::from_str("big"), Value::from_int(INT64_MIN));
  auto big = std::make_shared<Value>();
  big->kind = Kind::kBigInt;
  big->text = "-1267650600228229401496703205376";
  d->set_item(Value::from_str("bigger"), big);
  d->set_item(Value::from_str("float"), Value::from_float(0.1));
  d->set_item(Value::from_str("text"), Value::from_str("h\xc3\xa9llo"));
  d->set_item(Value::from_str("bytes"), Value::from_bytes(std::string("\x00\xff\x80", 3)));
  auto shared = Value::list({Value::from_int(1)});
  d->set_item(Value::from_str("pair"), Value::tuple({shared, shared}));
  d->set_item(Value::from_int(7), Value::none());
  auto od = Value::dict("collections.OrderedDict");
  od->set_item(Value::from_str("z"), Value::from_bool(false));
  d->set_item(Value::from_str("od"), od);
  return d;
}

TEST(PickleWriter, ReaderReadsBackWhatWriterWrote) {
  for (int protocol : {2, 4}) {
    WriteOptions w;
    w.protocol = protocol;
    auto bytes = write(*sample_tree(), w);
    auto r = read(Buffer::copy_of(bytes));
    EXPECT_EQ(r.protocol, protocol);
    EXPECT_EQ(r.value->get("int")->as_int(), -5);
    EXPECT_EQ(r.value->get("big")->as_int(), INT64_MIN);
    EXPECT_EQ(r.value->get("bigger")->text, "-1267650600228229401496703205376");
    EXPECT_EQ(r.value->get("bytes")->text, std::string("\x00\xff\x80", 3));
    auto pair = r.value->get("pair");
    EXPECT_EQ(pair->items[0].get(), pair->items[1].get());
    EXPECT_EQ(r.value->get("od")->type_name, "collections.OrderedDict");
  }
}

TEST(PickleWriter, PythonReadsWhatWriterWrote) {
  auto dir = testing::temp_dir();
  for (int protocol : {2, 4}) {
    WriteOptions w;
    w.protocol = protocol;
    auto path = dir / ("p" + std::to_string(protocol) + ".pkl");
    std::ofstream(path, std::ios::binary) << write(*sample_tree(), w);
    std::string out;
    int rc = testing::run_command(
        testing::python() +
            " -c \"import pickle,sys,collections; d=pickle.load(open(sys.argv[1],'rb')); "
            "assert d['int']==-5 and d['big']==-2**63 and d['bigger']==-2**100, d; "
            "assert d['float']==0.1 and d['text']=='h\\u00e9llo' and "
            "d['bytes']==b'\\x00\\xff\\x80';"
            "assert d['pair'][0] is d['pair'][1] and d['pair'][0]==[1] and d[7] is None;"
            "assert type(d['od']) is collections.OrderedDict and d['od']=={'z': False};"
            "print('ok')\" " +
            path.string() + " 2>&1",
        &out);
    EXPECT_EQ(rc, 0) << "protocol " << protocol << ": " << out;
  }
}

}  // namespace
}  // namespace torchless::pickle
