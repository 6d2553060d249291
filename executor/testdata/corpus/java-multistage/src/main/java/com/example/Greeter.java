package com.example;
class Greeter { static void greet() { System.out.println("hi"); } }
