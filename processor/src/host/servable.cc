#include "host/servable.h"

#include <malloc.h>

namespace rs::host {

Reaper::Reaper() : thread_([this] { Loop(); }) {}

Reaper::~Reaper() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Reaper::Close(std::unique_ptr<Model> model) {
  if (!model) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(std::move(model));
  }
  cv_.notify_one();
}

void Reaper::WaitIdle() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [this] { return queue_.empty() && closing_ == 0; });
}

void Reaper::Loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stop_ and nothing left
    std::unique_ptr<Model> m = std::move(queue_.front());
    queue_.pop_front();
    ++closing_;
    lk.unlock();
    try {
      m.reset();
    } catch (...) {  // a destructor that throws must not end the process
    }
#ifdef __GLIBC__
    malloc_trim(0);  // hand the closed model's heap pages back to the OS
#endif
    lk.lock();
    --closing_;
    if (queue_.empty() && closing_ == 0) idle_cv_.notify_all();
  }
}

Servable::~Servable() {
  batcher_.reset();  // no call is left: nothing is queued
  if (reaper_) reaper_->Close(std::move(model_));
}

}  // namespace rs::host
