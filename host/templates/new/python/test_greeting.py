import sys
import unittest
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path[:0] = [str(here / "src"), str(here / "sdk" / "guest-sdk" / "python")]

from greeting import SayHello, greet  # noqa: E402


class Greeting(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(greet(SayHello(name="Ada")).text, "Hello, Ada!")


if __name__ == "__main__":
    unittest.main()
