// Default ASan options of the fuzz targets. container-overflow is off: the
// std::string/std::vector objects that TensorFlow's uninstrumented protobuf
// and abseil code (libtensorflow_*.so) writes carry no container annotations,
// so instrumented code reading them reports overflows that are not there.
// allow_user_poisoning is off for the same reason: protobuf's inline header
// code poisons arena and string capacity when compiled with ASan, and its
// uninstrumented runtime hands that memory out without unpoisoning it.
// Every other check (heap/stack/global overflow, use-after-free, UBSan) stays on.
extern "C" const char* __asan_default_options() {
  return "detect_container_overflow=0:allow_user_poisoning=0";
}
