"""Merchandising vocabulary the prompt interpreter knows before it looks at embeddings: everyday
names, abbreviations and synonyms for product types and colours, written as phrase -> candidate
vocabulary values (the first one a model actually has wins, so one table serves the catalog and
Fashion-MNIST). Embeddings handle what is not listed; this table makes the common words exact."""

from __future__ import annotations

TYPE_ALIASES: dict[str, tuple[str, ...]] = {
    # tops
    "tee": ("Tshirts", "T-shirt/top"), "tees": ("Tshirts", "T-shirt/top"), "t shirt": ("Tshirts", "T-shirt/top"),
    "tshirt": ("Tshirts", "T-shirt/top"), "polo": ("Tshirts", "T-shirt/top"), "polo shirt": ("Tshirts",),
    "graphic tee": ("Tshirts",), "henley": ("Tshirts",),
    "top": ("Tops", "T-shirt/top"), "blouse": ("Tops", "Shirt"), "crop top": ("Tops",), "tank top": ("Tops",),
    "tank": ("Tops",), "cami": ("Camisoles", "Tops"), "camisole": ("Camisoles",),
    "shirt": ("Shirts", "Shirt"), "button down": ("Shirts", "Shirt"), "button up": ("Shirts", "Shirt"),
    "oxford shirt": ("Shirts",), "flannel": ("Shirts",),
    "hoodie": ("Sweatshirts", "Pullover"), "hoody": ("Sweatshirts", "Pullover"),
    "sweatshirt": ("Sweatshirts", "Pullover"), "jumper": ("Sweaters", "Pullover"),
    "pullover": ("Sweaters", "Pullover"), "cardigan": ("Sweaters", "Pullover"), "sweater": ("Sweaters", "Pullover"),
    "knit": ("Sweaters", "Pullover"), "turtleneck": ("Sweaters", "Pullover"),
    "jacket": ("Jackets", "Coat"), "bomber": ("Jackets", "Coat"), "coat": ("Jackets", "Coat"),
    "parka": ("Jackets", "Coat"), "windcheater": ("Jackets", "Coat"), "puffer": ("Jackets", "Coat"),
    "raincoat": ("Rain Jacket", "Jackets", "Coat"), "blazer": ("Blazers", "Jackets", "Coat"),
    "waistcoat": ("Waistcoat",), "gilet": ("Waistcoat", "Jackets"),
    "kurta": ("Kurtas",), "kurti": ("Kurtis",), "tunic": ("Tunics",),
    # one-pieces
    "dress": ("Dresses", "Dress"), "gown": ("Dresses", "Dress"), "frock": ("Dresses", "Dress"),
    "maxi": ("Dresses", "Dress"), "sundress": ("Dresses", "Dress"), "shift dress": ("Dresses", "Dress"),
    "jumpsuit": ("Jumpsuit",), "jump suit": ("Jumpsuit",), "playsuit": ("Jumpsuit", "Rompers"),
    "play suit": ("Jumpsuit", "Rompers"), "boiler suit": ("Jumpsuit",), "dungarees": ("Jumpsuit",),
    "overalls": ("Jumpsuit",), "catsuit": ("Jumpsuit",),
    "romper": ("Rompers", "Jumpsuit"), "onesie": ("Rompers", "Jumpsuit"),
    "saree": ("Sarees",), "sari": ("Sarees",), "nightie": ("Nightdress",), "nightgown": ("Nightdress",),
    "pyjamas": ("Night suits",), "pajamas": ("Night suits",), "pjs": ("Night suits",),
    "swimsuit": ("Swimwear",), "bikini": ("Swimwear",), "swimming costume": ("Swimwear",),
    # bottoms
    "jeans": ("Jeans", "Trouser"), "denims": ("Jeans", "Trouser"), "denim": ("Jeans", "Trouser"),
    "pants": ("Trousers", "Trouser"), "trousers": ("Trousers", "Trouser"), "chinos": ("Trousers", "Trouser"),
    "slacks": ("Trousers", "Trouser"), "joggers": ("Track Pants", "Trouser"),
    "sweatpants": ("Track Pants", "Trouser"), "trackpants": ("Track Pants", "Trouser"),
    "track pants": ("Track Pants", "Trouser"), "shorts": ("Shorts",), "bermudas": ("Shorts",),
    "skirt": ("Skirts", "Dress"), "miniskirt": ("Skirts",), "leggings": ("Leggings",), "tights": ("Tights",),
    "jeggings": ("Jeggings",), "capris": ("Capris",), "palazzos": ("Trousers",), "culottes": ("Trousers",),
    # footwear
    "sneakers": ("Casual Shoes", "Sneaker"), "sneaker": ("Casual Shoes", "Sneaker"),
    "trainers": ("Sports Shoes", "Sneaker"), "running shoes": ("Sports Shoes", "Sneaker"),
    "runners": ("Sports Shoes", "Sneaker"), "sport shoes": ("Sports Shoes", "Sneaker"),
    "kicks": ("Casual Shoes", "Sneaker"), "shoes": ("Casual Shoes", "Sneaker"),
    "loafers": ("Casual Shoes",), "moccasins": ("Casual Shoes",), "espadrilles": ("Casual Shoes",),
    "oxfords": ("Formal Shoes",), "brogues": ("Formal Shoes",), "derbies": ("Formal Shoes",),
    "dress shoes": ("Formal Shoes",), "heels": ("Heels", "Sandal"), "stilettos": ("Heels", "Sandal"),
    "pumps": ("Heels",), "wedges": ("Heels", "Sandal"), "flip flops": ("Flip Flops", "Sandal"),
    "flipflops": ("Flip Flops", "Sandal"), "slippers": ("Flip Flops", "Sandal"), "sliders": ("Flip Flops", "Sandal"),
    "slides": ("Flip Flops", "Sandal"), "chappals": ("Flip Flops", "Sandal"), "sandals": ("Sandals", "Sandal"),
    "ballerinas": ("Flats",), "ballet flats": ("Flats",), "flats": ("Flats",),
    "boots": ("Casual Shoes", "Ankle boot"), "ankle boots": ("Booties", "Casual Shoes", "Ankle boot"),
    "booties": ("Booties", "Ankle boot"),
    # bags and small accessories
    "bag": ("Handbags", "Bag"), "handbag": ("Handbags", "Bag"), "purse": ("Handbags", "Bag"),
    "tote": ("Handbags", "Bag"), "shoulder bag": ("Handbags", "Bag"), "satchel": ("Handbags", "Bag"),
    "backpack": ("Backpacks", "Bag"), "rucksack": ("Backpacks", "Rucksacks", "Bag"),
    "clutch": ("Clutches", "Bag"), "wallet": ("Wallets",), "billfold": ("Wallets",),
    "laptop bag": ("Laptop Bag",), "duffel": ("Duffel Bag",), "gym bag": ("Duffel Bag",),
    "messenger bag": ("Messenger Bag",), "watch": ("Watches",), "wristwatch": ("Watches",),
    "sunglasses": ("Sunglasses",), "shades": ("Sunglasses",), "sunnies": ("Sunglasses",),
    "aviators": ("Sunglasses",), "belt": ("Belts",), "cap": ("Caps",), "baseball cap": ("Caps",),
    "beanie": ("Caps",), "hat": ("Hat", "Caps"), "socks": ("Socks",), "tie": ("Ties",), "necktie": ("Ties",),
    "scarf": ("Scarves",), "stole": ("Stoles",), "muffler": ("Mufflers",),
    "earrings": ("Earrings",), "studs": ("Earrings",), "necklace": ("Necklace and Chains",),
    "chain": ("Necklace and Chains",), "pendant": ("Pendant",), "ring": ("Ring",), "bracelet": ("Bracelet",),
    "bangle": ("Bangle",), "cufflinks": ("Cufflinks",),
    # innerwear
    "bra": ("Bra",), "briefs": ("Briefs",), "boxers": ("Boxers",), "trunks": ("Trunk",),
    "vest": ("Innerwear Vests",), "undershirt": ("Innerwear Vests",), "shapewear": ("Shapewear",),
}

COLOUR_ALIASES: dict[str, tuple[str, ...]] = {
    "blk": ("Black",), "bk": ("Black",), "blck": ("Black",), "jet black": ("Black",), "ebony": ("Black",),
    "wht": ("White",), "wh": ("White",), "snow": ("White",), "optic white": ("White",),
    "navy": ("Navy Blue",), "nvy": ("Navy Blue",), "dark blue": ("Navy Blue",), "midnight": ("Navy Blue",),
    "midnight blue": ("Navy Blue",), "indigo": ("Navy Blue", "Blue"),
    "light blue": ("Blue",), "sky blue": ("Blue",), "baby blue": ("Blue",), "royal blue": ("Blue",),
    "cobalt": ("Blue",), "denim blue": ("Blue",), "blu": ("Blue",),
    "gray": ("Grey",), "gry": ("Grey",), "ash": ("Grey",), "slate": ("Grey",),
    "heather grey": ("Grey Melange",), "heather gray": ("Grey Melange",), "melange": ("Grey Melange",),
    "crimson": ("Red",), "scarlet": ("Red",), "cherry": ("Red",), "rd": ("Red",),
    "wine": ("Burgundy", "Maroon"), "oxblood": ("Burgundy", "Maroon"), "claret": ("Burgundy", "Maroon"),
    "ivory": ("Off White", "Cream"), "offwhite": ("Off White",), "ecru": ("Off White", "Cream"),
    "camel": ("Beige", "Khaki"), "sand": ("Beige",), "stone": ("Beige",),
    "aqua": ("Turquoise Blue",), "turquoise": ("Turquoise Blue",), "cyan": ("Turquoise Blue",),
    "emerald": ("Green",), "forest green": ("Green",), "mint": ("Sea Green", "Green"),
    "army green": ("Olive",), "military green": ("Olive",), "neon green": ("Fluorescent Green",),
    "lime": ("Lime Green",), "golden": ("Gold",), "silvery": ("Silver",), "gunmetal": ("Steel",),
    "fuchsia": ("Magenta",), "hot pink": ("Magenta", "Pink"), "blush": ("Pink",), "baby pink": ("Pink",),
    "violet": ("Purple",), "plum": ("Purple",), "lilac": ("Lavender",), "mauve": ("Mauve",),
    "multicolor": ("Multi",), "multicolour": ("Multi",), "multi coloured": ("Multi",),
    "multi colored": ("Multi",), "multicoloured": ("Multi",), "rainbow": ("Multi",),
    "chocolate": ("Brown",), "coffee": ("Coffee Brown", "Brown"), "mocha": ("Coffee Brown", "Brown"),
    "brwn": ("Brown",), "dark grey": ("Charcoal",), "dark gray": ("Charcoal",), "mustard yellow": ("Mustard",),
    "lemon": ("Yellow",), "tangerine": ("Orange",), "coral": ("Peach", "Orange"), "terracotta": ("Rust",),
    "rose gold": ("Rose",),
}

# What a fashion catalog never sells, as broad categories: a phrase read by similarity must be
# closer to a product type than to all of these (by TYPE_MARGIN) unless it is very close to a type.
OUT_OF_SCOPE = (
    "furniture", "food", "meal", "fruit", "vegetable", "animal", "pet", "bird", "fish", "vehicle", "car",
    "electronics", "computer", "appliance", "machine", "tool", "toy", "game", "plant", "flower", "building",
    "house", "musical instrument", "book", "sports equipment", "kitchenware", "artwork", "person", "place",
    "weapon", "drink", "medicine", "stationery",
)

# Every word that names a colour in some vocabulary, so that no pass reads a colour as a typo of
# a product type (Fashion-MNIST has no colours: "black" must not become "slacks" -> Trouser), and
# the other way round.
COLOUR_WORDS = frozenset(w for phrase in COLOUR_ALIASES for w in phrase.split()) | frozenset(
    w.lower() for values in COLOUR_ALIASES.values() for v in values for w in v.split()) | frozenset("""
black white red blue green yellow orange purple pink brown grey gray beige cream tan navy maroon olive
teal gold silver khaki peach lavender mustard magenta burgundy charcoal copper bronze rust mauve nude
""".split())
TYPE_WORDS = frozenset(w for phrase in TYPE_ALIASES for w in phrase.split()) | frozenset(
    w.lower() for values in TYPE_ALIASES.values() for v in values for w in v.replace("/", " ").split())
COLOUR_WORDS = COLOUR_WORDS - TYPE_WORDS  # "denim" names jeans before it names a blue

# Words that carry no product attribute: dropped instead of reported as unmapped.
STOPWORDS = frozenset("""
a an the for with without in on of and or some any me my i we our please want need looking look like
generate create make show give get draw render design image images picture pictures photo photos pic pics
product products item items new style styled kind type one two three few of to that this which is are be
by from as at very really nice cool cute good great best pair pairs piece set
""".split())

# Garment details that contain type-like words ("short" -> Shorts): never a product type, always
# reported as unmapped so the description model can use them.
DETAIL_PHRASES = frozenset({
    "short sleeve", "short sleeves", "short sleeved", "long sleeve", "long sleeves", "long sleeved",
    "half sleeve", "half sleeves", "full sleeve", "full sleeves", "cap sleeve", "cap sleeves",
    "three quarter sleeve", "sleeveless", "short length", "knee length", "ankle length", "top stitched",
    "high top", "low top", "shirt collar", "polo collar", "dress code", "half sleeved", "full sleeved",
    "cap sleeved", "shirt style", "wide leg", "straight leg", "wide legged", "straight fit", "boot cut",
    "bootcut", "flared", "high waist", "high waisted", "low rise", "mid rise",
})

# After one of these words a product type is a detail of the product named before it
# ("jumpsuit with short sleeves", "dress in a shirt style").
PREPOSITIONS = frozenset({"with", "without", "in", "featuring", "having", "plus", "under", "over"})

# Where a noun phrase ends: the product is the last noun before the first of these that follows a
# noun ("goldfish in a tank" asks for a goldfish; "pair of jeans" for jeans).
HEAD_CUTS = PREPOSITIONS | frozenset({"for", "of", "on", "at", "to", "from", "by", "like", "and", "or"})

# Words that can end a product phrase without being the product: who it is for, sizes, seasons,
# occasions ("sweater for women", "jumpsuit summer").
NON_HEAD_WORDS = frozenset("""
women woman womens men man mens ladies lady girls girl boys boy kids kid child children unisex adult adults
size sizes xs xl xxl xxxl small medium large plus petite tall summer winter spring autumn fall monsoon
party office work casual formal everyday daily wedding festive sale
""".split())

# Garment details a description is checked for: canonical name -> (group, phrases). Within an
# EXCLUSIVE group the details exclude each other: copy that says "long sleeves" for a short-sleeve
# request contradicts it. Patterns, fabrics and fits (None) describe the product ("printed cotton
# T-shirt"); features (pockets, zip) are things it has; both combine freely.
DETAILS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "short sleeves": ("sleeves", ("short sleeve", "short sleeved", "half sleeve", "half sleeved")),
    "long sleeves": ("sleeves", ("long sleeve", "long sleeved", "full sleeve", "full sleeved")),
    "three-quarter sleeves": ("sleeves", ("three quarter sleeve", "three fourth sleeve", "3 4 sleeve",
                                          "3 4th sleeve", "elbow sleeve")),
    "sleeveless": ("sleeves", ("sleeveless", "strapless", "no sleeve")),
    "cap sleeves": ("sleeves", ("cap sleeve",)),
    "v-neck": ("neck", ("v neck", "v necked", "vneck", "v neckline")),
    "round neck": ("neck", ("round neck", "crew neck", "crewneck", "round neckline")),
    "shirt collar": ("neck", ("shirt collar", "spread collar", "button down collar", "cutaway collar")),
    "mandarin collar": ("neck", ("mandarin collar", "band collar", "nehru collar", "chinese collar")),
    "polo collar": ("neck", ("polo collar",)),
    "hooded": ("neck", ("hood", "hooded")),
    "high neck": ("neck", ("high neck", "turtle neck", "mock neck", "turtleneck")),
    "boat neck": ("neck", ("boat neck", "bateau neck")),
    "square neck": ("neck", ("square neck",)),
    "sweetheart neck": ("neck", ("sweetheart neck",)),
    "off-shoulder": ("neck", ("off shoulder", "off the shoulder", "bardot")),
    "halter neck": ("neck", ("halter neck", "halter")),
    "midi": ("length", ("midi", "midi length", "calf length")),
    "mini": ("length", ("mini", "above knee", "above the knee")),
    "knee length": ("length", ("knee length",)),
    "ankle length": ("length", ("ankle length", "floor length", "full length")),
    "solid": (None, ("solid", "plain")),
    "printed": (None, ("printed", "print")),
    "striped": (None, ("striped", "stripe", "pinstriped")),
    "checked": (None, ("checked", "check", "plaid", "tartan", "gingham")),
    "floral": (None, ("floral", "flower", "flowered")),
    "embroidered": (None, ("embroidered", "embroidery")),
    "polka dots": (None, ("polka dot", "polka dotted", "polka")),
    "colourblocked": (None, ("colourblocked", "colorblocked", "colour blocked", "color blocked", "colourblock")),
    "sequinned": (None, ("sequinned", "sequined", "sequin")),
    "slim fit": (None, ("slim fit", "skinny fit", "slim")),
    "regular fit": (None, ("regular fit",)),
    "relaxed fit": (None, ("relaxed fit", "loose fit", "oversized", "relaxed")),
    "zip": ("feature", ("zip", "zipper", "zipped")),
    "buttons": ("feature", ("button", "buttoned", "button placket")),
    "pockets": ("feature", ("pocket",)),
    "belted": ("feature", ("belted", "waist tie up", "tie up belt")),
    "tie-up": ("feature", ("tie up", "tie ups", "tie detail", "tie knot")),
    "cotton": (None, ("cotton",)),
    "linen": (None, ("linen",)),
    "leather": (None, ("leather",)),
    "silk": (None, ("silk", "silky")),
    "wool": (None, ("wool", "woollen", "woolen")),
}
EXCLUSIVE = frozenset({"sleeves", "neck", "length"})
