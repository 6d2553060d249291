package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestSlotTracker_active(t *testing.T) {
	nn := func(n string) types.NamespacedName { return types.NamespacedName{Namespace: "ns", Name: n} }
	var s slotTracker
	s.launch(nn("a"), nn("a-1-1"), t0)
	s.launch(nn("b"), nn("b-1-1"), t0)

	tests := []struct {
		name   string
		cached map[types.NamespacedName]bool
		now    time.Time
		want   int
	}{
		{"launched pods the cache has not seen count", nil, t0.Add(time.Second), 2},
		{"a launched pod the cache shows finished does not count", map[types.NamespacedName]bool{nn("a-1-1"): false}, t0.Add(time.Second), 1},
		{"cached running pods count once", map[types.NamespacedName]bool{nn("a-1-1"): true, nn("x-1-1"): true}, t0.Add(time.Second), 3},
		{"launches expire after the grace period", nil, t0.Add(2 * launchGrace), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.active(tc.cached, tc.now); got != tc.want {
				t.Errorf("active() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSlotTracker_queued(t *testing.T) {
	var s slotTracker
	k := types.NamespacedName{Namespace: "ns", Name: "a"}
	s.queue(k)
	if got := s.queued(); len(got) != 1 || got[0] != k {
		t.Fatalf("queued() = %v, want [%v]", got, k)
	}
	s.launch(k, types.NamespacedName{Namespace: "ns", Name: "a-1-1"}, t0)
	if got := s.queued(); len(got) != 0 {
		t.Errorf("queued() after launch = %v, want none", got)
	}
	if !s.launched(k) {
		t.Error("launched() = false after launch")
	}
	s.forget(k)
	if s.launched(k) {
		t.Error("launched() = true after forget")
	}
}
