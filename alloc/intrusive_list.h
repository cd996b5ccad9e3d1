// alloc/intrusive_list.h
// -----------------------------------------------------------------------------
//
// `IntrusiveList<T, &T::link>`: the one doubly-linked intrusive list of sqloop. The element
// carries its own links (a `ListLink<T>` member), so putting it in a list, taking it out from
// anywhere, and moving it to another list allocate nothing and cost O(1). It serves as a FIFO
// (PushBack + PopFront), a LRU (PushBack on use, PopFront to evict, Remove on reuse) and a
// stack of free elements alike.
//
// Each link remembers the list it is in, so the two classic intrusive-list bugs stop the
// process at once with a message instead of corrupting two lists: inserting an element that is
// already in a list, and removing it from a list it is not in. An element is in at most one
// list per link; an element that must be in two lists at once has two links.
//
// Lives in alloc/ because alloc is the bottom layer that every other layer may use.
//
// Example:
//
//   struct Job {
//     int id = 0;
//     sqloop::ListLink<Job> link;
//   };
//   sqloop::IntrusiveList<Job, &Job::link> queue;
//   Job a, b;
//   queue.PushBack(a);
//   queue.PushBack(b);
//   Job* first = queue.PopFront();  // &a
//   queue.Remove(b);                // O(1), from anywhere in the list
#ifndef SQLOOP_ALLOC_INTRUSIVE_LIST_H_
#define SQLOOP_ALLOC_INTRUSIVE_LIST_H_

#include <cstddef>

#include "sqloop/alloc/check.h"

namespace sqloop {

// The links an element carries for one list. Belongs to the list while the element is in it.
template <typename T>
class ListLink {
 public:
  ListLink() = default;
  // A copy of an element is in no list: copying the links would put it in its original's
  // place without the list knowing.
  ListLink(const ListLink& /*other*/) {}
  // Assigns nothing, so assigning a link to itself is as harmless as any other assignment.
  // NOLINTNEXTLINE(bugprone-unhandled-self-assignment)
  ListLink& operator=(const ListLink& /*other*/) { return *this; }
  ~ListLink() = default;

  [[nodiscard]] bool linked() const { return list_ != nullptr; }

 private:
  template <typename U, ListLink<U> U::*>
  friend class IntrusiveList;

  T* prev_ = nullptr;
  T* next_ = nullptr;
  const void* list_ = nullptr;  // The list the element is in; null when in none.
};

template <typename T, ListLink<T> T::*Link>
class IntrusiveList {
 public:
  IntrusiveList() = default;
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  [[nodiscard]] bool empty() const { return head_ == nullptr; }
  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] T* front() const { return head_; }
  [[nodiscard]] T* back() const { return tail_; }
  // The element after `element` in this list, or null; for walking the list.
  [[nodiscard]] static T* Next(const T& element) { return (element.*Link).next_; }
  // The element before `element` in this list, or null; for walking it from the back.
  [[nodiscard]] static T* Prev(const T& element) { return (element.*Link).prev_; }
  [[nodiscard]] bool Contains(const T& element) const { return (element.*Link).list_ == this; }

  void PushBack(T& element) {
    ListLink<T>& link = Claim(element);
    link.prev_ = tail_;
    (tail_ == nullptr ? head_ : (tail_->*Link).next_) = &element;
    tail_ = &element;
  }

  void PushFront(T& element) {
    ListLink<T>& link = Claim(element);
    link.next_ = head_;
    (head_ == nullptr ? tail_ : (head_->*Link).prev_) = &element;
    head_ = &element;
  }

  // Removes and returns the first element, or null when empty.
  T* PopFront() {
    T* element = head_;
    if (element != nullptr) Remove(*element);
    return element;
  }

  void Remove(T& element) {
    ListLink<T>& link = element.*Link;
    SQLOOP_CHECK(link.list_ == this, "IntrusiveList::Remove: the element is not in this list");
    (link.prev_ == nullptr ? head_ : (link.prev_->*Link).next_) = link.next_;
    (link.next_ == nullptr ? tail_ : (link.next_->*Link).prev_) = link.prev_;
    link.prev_ = link.next_ = nullptr;
    link.list_ = nullptr;
    --size_;
  }

 private:
  ListLink<T>& Claim(T& element) {
    ListLink<T>& link = element.*Link;
    SQLOOP_CHECK(link.list_ == nullptr,
                 "IntrusiveList: the element is already in a list; remove it first");
    link.list_ = this;
    ++size_;
    return link;
  }

  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sqloop

#endif  // SQLOOP_ALLOC_INTRUSIVE_LIST_H_
