//! Enums of static names (metric label values, `Cache-Status` details) defined from one list,
//! so that `ALL`, the list metric handles are pre-resolved from, cannot miss a variant. A leaf:
//! it imports nothing of the crate.

/// Defines a fieldless enum together with `pub const ALL: [Self; N]` (every variant, in the
/// order written) and a `pub const fn` returning each variant's static name:
///
/// ```ignore
/// crate::labels::label_enum! {
///     /// Where a thing came from.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum Source {
///         /// Typed by a person.
///         Admin => "admin",
///         Cli => "cli",
///     }
///     /// The metric label value.
///     fn label;
/// }
/// assert_eq!(Source::ALL, [Source::Admin, Source::Cli]);
/// assert_eq!(Source::Cli.label(), "cli");
/// ```
///
/// A variant is added in one place, with its name; `ALL`'s length follows.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $label:literal ),+ $(,)?
        }
        $(#[$method_meta:meta])*
        fn $method:ident;
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every variant, in label order.
            pub const ALL: [Self; [$($label),+].len()] = [$(Self::$variant),+];

            $(#[$method_meta])*
            pub const fn $method(self) -> &'static str {
                match self {
                    $( Self::$variant => $label, )+
                }
            }
        }
    };
}

pub(crate) use label_enum;

#[cfg(test)]
mod tests {
    label_enum! {
        /// A test enum.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Colour {
            /// The first.
            Red => "red",
            Green => "green",
            DarkBlue => "dark-blue",
        }
        /// Its name.
        fn name;
    }

    #[test]
    fn all_lists_every_variant_in_order_with_its_name() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Green, Colour::DarkBlue]);
        let names: Vec<_> = Colour::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["red", "green", "dark-blue"]);
    }
}
