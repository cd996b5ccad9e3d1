// IntrusiveList: order, O(1) removal from anywhere, and the two misuse checks.
#include <vector>

#include "gtest/gtest.h"
#include "sqloop/alloc/intrusive_list.h"

namespace sqloop {
namespace {

struct Item {
  explicit Item(int item_id) : id(item_id) {}
  int id;
  ListLink<Item> link;
};
using List = IntrusiveList<Item, &Item::link>;

std::vector<int> Ids(const List& list) {
  std::vector<int> ids;
  for (const Item* item = list.front(); item != nullptr; item = List::Next(*item)) {
    ids.push_back(item->id);
  }
  return ids;
}

TEST(IntrusiveListTest, KeepsOrderAndRemovesFromAnywhere) {
  Item a(1), b(2), c(3), d(4);
  List list;
  list.PushBack(a);
  list.PushBack(b);
  list.PushBack(c);
  list.PushFront(d);
  EXPECT_EQ(Ids(list), (std::vector<int>{4, 1, 2, 3}));
  EXPECT_EQ(list.size(), 4u);
  list.Remove(b);  // Middle.
  list.Remove(c);  // Back.
  EXPECT_EQ(Ids(list), (std::vector<int>{4, 1}));
  EXPECT_EQ(list.back(), &a);
  EXPECT_EQ(list.PopFront(), &d);  // Front.
  EXPECT_EQ(list.PopFront(), &a);
  EXPECT_EQ(list.PopFront(), nullptr);
  EXPECT_TRUE(list.empty());
  EXPECT_FALSE(a.link.linked());
}

TEST(IntrusiveListTest, AnElementMovesBetweenListsAndACopyIsInNone) {
  Item a(1);
  List first, second;
  first.PushBack(a);
  EXPECT_TRUE(first.Contains(a));
  const Item copy = a;
  EXPECT_FALSE(copy.link.linked());
  first.Remove(a);
  second.PushBack(a);
  EXPECT_TRUE(second.Contains(a));
  EXPECT_FALSE(first.Contains(a));
  EXPECT_EQ(Ids(second), (std::vector<int>{1}));
  second.Remove(a);
}

TEST(IntrusiveListDeathTest, InsertingTwiceOrRemovingFromTheWrongListStops) {
  Item a(1);
  List first, second;
  first.PushBack(a);
  EXPECT_DEATH(second.PushBack(a), "already in a list");
  EXPECT_DEATH(second.Remove(a), "not in this list");
  first.Remove(a);
}

}  // namespace
}  // namespace sqloop
